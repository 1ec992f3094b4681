"""Evaluation of the model families on one test set, the selection rule, promotion and the report."""
