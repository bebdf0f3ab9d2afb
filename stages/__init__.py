"""The pipeline's DVC stages: curate → cache → rank → edit → evaluate → attack (`python -m stages.<name> REQUEST_ID`)."""
