"""The bottom layer: where the project lives and how its own files are read (no ZenML, MLflow or torch)."""
