"""Messages for the person at the terminal: one line each, on stderr (stdout carries samples)."""

import sys


def warn(msg: str) -> None:
    print(f"charnn: warning: {msg}", file=sys.stderr, flush=True)


def info(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
