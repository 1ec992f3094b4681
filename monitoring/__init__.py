"""Watching what is served: the request log and writers' feedback summarised, compared per model and checked."""
