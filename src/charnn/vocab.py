"""Characters (or bytes) <-> integer ids.

The vocabulary is the sorted set of units seen in the training text: Unicode code points by
default, raw bytes with ``unit="bytes"``. It travels inside every checkpoint so that a checkpoint
alone is enough to encode a prime and decode samples.
"""

from __future__ import annotations

import codecs
import json
from typing import Callable, Sequence

import numpy as np

from charnn.errors import CharnnError


def code_points(text: str) -> np.ndarray:
    """The Unicode code points of text, (N,) uint32, without a Python loop (UTF-32 is one
    4-byte unit per code point; lone surrogates pass through as their own values)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


class Vocab:
    def __init__(self, units: Sequence[int], unit: str = "char"):
        """units: sorted distinct code points (unit="char") or byte values (unit="bytes")."""
        if unit not in ("char", "bytes"):
            raise ValueError(f"unit must be 'char' or 'bytes', got {unit!r}")
        self.unit = unit
        self.codes = np.asarray(sorted(int(u) for u in units), dtype=np.int64)  # (V,)
        if len(np.unique(self.codes)) != len(self.codes):
            raise ValueError("vocabulary units must be distinct")

    def __len__(self) -> int:
        return len(self.codes)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.unit == other.unit and np.array_equal(self.codes, other.codes)

    @property
    def dtype(self):
        """The smallest unsigned integer type that holds every id."""
        return np.uint8 if len(self) <= 256 else np.uint16 if len(self) <= 65536 else np.uint32

    def units(self, text: str | bytes) -> np.ndarray:
        """The raw code points (or byte values) of text, shape (N,)."""
        if self.unit == "bytes":
            data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
            return np.frombuffer(data, dtype=np.uint8).astype(np.int64)
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return code_points(text).astype(np.int64)

    def encode(self, text: str | bytes) -> np.ndarray:
        """text -> ids, shape (N,). Units the vocabulary lacks raise CharnnError naming them."""
        codes = self.units(text)
        if len(codes) == 0:
            return np.zeros(0, dtype=np.int64)
        idx = np.searchsorted(self.codes, codes)
        idx_clipped = np.minimum(idx, len(self.codes) - 1)
        unknown = self.codes[idx_clipped] != codes
        if unknown.any():
            missing = sorted(set(codes[unknown].tolist()))
            raise CharnnError(f"the model has never seen {self.describe(missing)}; remove them or train on text that has them")
        return idx_clipped

    def describe(self, codes: Sequence[int]) -> str:
        shown = ", ".join(self._show(c) for c in codes[:10])
        more = f" and {len(codes) - 10} more" if len(codes) > 10 else ""
        kind = "character" if self.unit == "char" else "byte"
        return f"{len(codes)} {kind}{'s' if len(codes) != 1 else ''}: {shown}{more}"

    def _show(self, code: int) -> str:
        if self.unit == "bytes":
            return f"0x{code:02x}"
        ch = chr(code)
        return repr(ch) if ch.isprintable() and ch != " " else f"U+{code:04X}"

    def decode(self, ids) -> str:
        """ids -> text. Byte-level output is decoded as UTF-8, broken sequences replaced."""
        codes = self.codes[np.asarray(ids, dtype=np.int64)]
        if self.unit == "bytes":
            return codes.astype(np.uint8).tobytes().decode("utf-8", "replace")
        return codes.astype(np.uint32).tobytes().decode("utf-32-le", "surrogatepass")

    def stream_decoder(self) -> Callable[[Sequence[int]], str]:
        """A function that turns ids arriving one by one into text, holding back partial
        UTF-8 sequences when the unit is a byte."""
        if self.unit == "char":
            return self.decode
        dec = codecs.getincrementaldecoder("utf-8")("replace")
        return lambda ids: dec.decode(self.codes[np.asarray(ids, dtype=np.int64)].astype(np.uint8).tobytes())

    def to_json(self) -> str:
        if self.unit == "char":
            return json.dumps({"unit": "char", "chars": "".join(chr(c) for c in self.codes)}, ensure_ascii=True)
        return json.dumps({"unit": "bytes", "bytes": self.codes.tolist()})

    @classmethod
    def from_json(cls, text: str) -> "Vocab":
        try:
            d = json.loads(text)
            if d["unit"] == "char":
                return cls([ord(c) for c in d["chars"]], "char")
            return cls(d["bytes"], "bytes")
        except (KeyError, TypeError, ValueError) as e:
            raise CharnnError(f"the vocabulary is malformed ({e}); was it written by charnn?") from None
