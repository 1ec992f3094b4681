"""Project infrastructure: stack bootstrap, run profiles and run summaries."""
