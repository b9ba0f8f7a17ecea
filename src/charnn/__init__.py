"""charnn: train, sample, evaluate and look inside character-level language models.

    import charnn
    run = charnn.train("stdlib", "runs/first", max_time=30)   # -> charnn.Run
    model = charnn.load("runs/first")                         # -> charnn.Model
    model.sample(length=200, seed=0)

The public API is what this module exports (``charnn.api`` documents it); every other module is
internal. Importing charnn is cheap: the API (and torch) load on first use.
"""

__version__ = "0.1.0"

__all__ = ["CharnnError", "Run", "Model", "Cells", "Attention", "Analysis", "train", "load", "build_config", "__version__"]


def __getattr__(name: str):
    # PEP 562: the API loads when first asked for, so that `import charnn.config` stays light
    if name in __all__:
        from charnn import api

        return getattr(api, name)
    raise AttributeError(f"module 'charnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
