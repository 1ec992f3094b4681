"""MLflow model packaging: a saved model directory logged as a pyfunc, and read back from the registry."""
