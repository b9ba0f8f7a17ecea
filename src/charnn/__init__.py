"""charnn: train, sample, evaluate and look inside character-level language models."""

__version__ = "0.1.0"
