"""trainlab: the training-neural-networks curriculum as fast, tested software."""

__version__ = "0.1.0"
