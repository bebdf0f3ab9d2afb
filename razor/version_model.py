"""The code MLflow runs to load a registered version (models from code, so no pickle is stored):
the pyfunc model of razor.served."""

from mlflow.models import set_model

from razor.served import Version

set_model(Version())
