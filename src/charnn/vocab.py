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
        """The raw code points (or byte values: bytes and token units) of text, shape (N,)."""
        if self.unit != "char":
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
        kind = "byte" if self.unit == "bytes" else "character"  # a token vocabulary names characters
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

    def char_counts(self) -> np.ndarray:
        """(V,) characters each id stands for: 1 (a byte model counts bytes as its characters)."""
        return np.ones(len(self), dtype=np.float64)

    def start_ids(self) -> np.ndarray:
        """What generation starts from with no prime: a newline if the model knows one, else id 0."""
        nl = self.units("\n")[0]
        return np.searchsorted(self.codes, [nl]) if nl in self.codes else np.zeros(1, dtype=np.int64)

    def to_json(self) -> str:
        if self.unit == "char":
            return json.dumps({"unit": "char", "chars": "".join(chr(c) for c in self.codes)}, ensure_ascii=True)
        return json.dumps({"unit": "bytes", "bytes": self.codes.tolist()})

    @classmethod
    def from_json(cls, text: str) -> "Vocab":
        try:
            d = json.loads(text)
            if d["unit"] == "bpe":
                return TokenVocab(d["tokenizer"])
            if d["unit"] == "char":
                return cls([ord(c) for c in d["chars"]], "char")
            return cls(d["bytes"], "bytes")
        except (KeyError, TypeError, ValueError) as e:
            raise CharnnError(f"the vocabulary is malformed ({e}); was it written by charnn?") from None


# --- Byte-pair tokens --------------------------------------------------------------------------


def _byte_level_alphabet() -> list[str]:
    """The printable character standing for each byte value in a byte-level BPE's token strings
    (the GPT-2 convention that Hugging Face's ByteLevel pre-tokenizer follows: printable Latin-1
    bytes stand for themselves, the other 68 are shifted to U+0100 onward in byte order).
    tokenizers exposes the set of these characters but not which byte each stands for, and we
    need that to turn a token back into its bytes one token at a time (streaming, per-token
    character counts)."""
    keep = {*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)}
    shifted = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(shifted)) for b in range(256)]


BYTE_CHARS = _byte_level_alphabet()
CHAR_BYTE = {c: b for b, c in enumerate(BYTE_CHARS)}


class TokenVocab(Vocab):
    """Byte-pair tokens learned from a training text with Hugging Face's ``tokenizers`` (a byte-
    level BPE: text -> UTF-8 bytes -> merged pieces, exactly reversible). The alphabet is the
    bytes the training text holds, as a char vocabulary is its characters, so a text with a byte
    the tokenizer never saw is refused by name rather than silently dropped (which is what the
    library does). The tokenizer's own JSON travels in the checkpoint: a checkpoint alone is
    still enough to sample."""

    def __init__(self, tokenizer_json: str):
        from tokenizers import Tokenizer  # imported here: char models never need it

        try:
            self.tokenizer = Tokenizer.from_str(tokenizer_json)
        except Exception as e:  # the library raises its own exception type for malformed JSON
            raise CharnnError(
                f"the token vocabulary is malformed ({str(e).splitlines()[0][:200]}); was it written by charnn?"
            ) from None
        self.unit = "bpe"
        self.json = tokenizer_json
        size = self.tokenizer.get_vocab_size()
        self.codes = np.arange(size, dtype=np.int64)  # ids are the codes: the tokenizer owns the mapping
        by_id = {i: t for t, i in self.tokenizer.get_vocab().items()}
        if sorted(by_id) != list(range(size)):
            raise CharnnError("the token vocabulary's ids are not 0..V-1; was it written by charnn?")
        try:
            self.token_bytes = [bytes(CHAR_BYTE[c] for c in by_id[i]) for i in range(size)]  # id -> its bytes
        except KeyError:
            raise CharnnError("the token vocabulary is not byte-level; was it written by charnn?") from None
        self.alphabet = np.zeros(256, dtype=bool)  # the bytes the tokenizer can encode
        for b in self.token_bytes:
            if len(b) == 1:
                self.alphabet[b[0]] = True

    @classmethod
    def train(cls, text: str, size: int, alphabet: Sequence[int] = ()) -> "TokenVocab":
        """Learn up to `size` tokens from text: its bytes and the `alphabet` bytes, then merges."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        # use_regex: merges stay inside words and runs of spaces (GPT-2's pattern), so tokens are
        # pieces a person can read; add_prefix_space off keeps decode(encode(text)) == text.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=size, min_frequency=2, show_progress=False, initial_alphabet=[BYTE_CHARS[b] for b in alphabet]
        )
        tok.train_from_iterator([text], trainer=trainer)
        return cls(tok.to_str())

    def __eq__(self, other) -> bool:
        return isinstance(other, TokenVocab) and self.json == other.json

    @property
    def dtype(self):
        return np.uint16 if len(self) <= 65536 else np.uint32

    def encode(self, text: str | bytes) -> np.ndarray:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        raw = self.units(text)
        unknown = ~self.alphabet[raw]
        if unknown.any():
            chars = sorted({ch for ch in text if not self.alphabet[np.frombuffer(ch.encode("utf-8"), np.uint8)].all()})
            raise CharnnError(
                f"the model's tokens have never seen {self.describe([ord(c) for c in chars])}; "
                f"remove them or train on text that has them"
            )
        return np.asarray(self.tokenizer.encode(text).ids, dtype=np.int64)

    def _bytes(self, ids) -> bytes:
        return b"".join(self.token_bytes[i] for i in np.asarray(ids, dtype=np.int64).tolist())

    def decode(self, ids) -> str:
        return self._bytes(ids).decode("utf-8", "replace")

    def stream_decoder(self) -> Callable[[Sequence[int]], str]:
        dec = codecs.getincrementaldecoder("utf-8")("replace")
        return lambda ids: dec.decode(self._bytes(ids))

    def pieces(self) -> list[str]:
        """Each token as text (a token that cuts a character shows U+FFFD for the cut part)."""
        return [b.decode("utf-8", "replace") for b in self.token_bytes]

    def char_counts(self) -> np.ndarray:
        """(V,) characters each token holds, counted by UTF-8 lead bytes, so that the counts of a
        text's tokens add up to its character count even where a token cuts a character."""
        return np.array([sum(1 for b in t if b & 0xC0 != 0x80) for t in self.token_bytes], dtype=np.float64)

    def start_ids(self) -> np.ndarray:
        return self.encode("\n") if self.alphabet[ord("\n")] else np.zeros(1, dtype=np.int64)

    def to_json(self) -> str:
        return json.dumps({"unit": "bpe", "tokenizer": self.json})
