"""The BentoML service and the Gradio UI (arrive with issue #7)."""
