"""The command line: parse arguments, call the library, print. Nothing in the library imports it.

``main`` builds the parser and dispatches; ``train`` holds train / sample / eval / info / check,
``inspect`` the inspect and analyze commands, ``study`` ngram / grid / evaluate-samples.
"""

from charnn.cli.main import main

__all__ = ["main"]
