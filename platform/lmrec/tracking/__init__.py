"""MLflow: runs, artifacts, the model registry and aliases."""
