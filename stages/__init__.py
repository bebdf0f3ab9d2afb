"""The pipeline's DVC stages: curate → cache → rank → edit → evaluate (`python -m stages.<name> REQUEST_ID`)."""
