"""What every command's parser shares: one-line usage errors and the value types of flags."""

from __future__ import annotations

import argparse
import math
import re

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) with exit code 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def duration(text: str) -> float:
    """'90', '60s', '10m', '1h30m', '1.5h' -> seconds."""
    s = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|s)", s)
    if not parts or "".join(a + b for a, b in parts) != s:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 90, 60s, 10m or 1h30m")
    return sum(float(a) * {"h": 3600, "m": 60, "s": 1}[b] for a, b in parts)


def split(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid split {text!r}: use three fractions like 0.9,0.05,0.05") from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"invalid split {text!r}: use three fractions like 0.9,0.05,0.05")
    return parts


def count(text: str) -> int:
    """A whole number >= 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


def number(text: str) -> float:
    """A finite number."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


DEVICES = ["auto", "cpu", "cuda", "mps"]


def document_split(text: str) -> str:
    """--documents: line, blank or a regular expression; an empty one would mean no documents."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "it is empty: give line, blank or a regular expression that matches the start of each document, "
            "or leave --documents out for one stream of text"
        )
    return text


def which(text: str) -> str:
    """--checkpoint: best, last, or step:N (weights the run kept at step N)."""
    if text in ("best", "last") or re.fullmatch(r"step:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"invalid checkpoint {text!r}: use best, last or step:N")


WHICH_HELP = "best (default), last, or step:N: the weights the run kept at step N (charnn check lists them)"
