"""lmrec: train, compress, tune and serve large-model sequential recommenders on Ray."""

__version__ = "0.1.0"
