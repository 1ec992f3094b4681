"""Training: the loops, the GAN study and multi-process training, over the networks in ``models/``."""
