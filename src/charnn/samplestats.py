"""Metrics for generated text, judged against the training text (and held-out text).

- novelty: for each length L (5 to 50), the share of the samples' L-character substrings that
  never occur in the training text (torch-rnn shipped a script for this); 0% means copied;
- the longest span of a sample copied verbatim from the training text;
- the Jensen-Shannon divergence between the character n-gram (1, 2, 3) frequencies of the
  samples and of held-out text (0: the same statistics; ln 2 = 0.693: nothing in common);
- the share of the samples' words that occur in the training text;
- for code: the share of samples whose brackets () [] {} balance and whose double quotes pair up.

Substring membership uses 64-bit polynomial hashes of every L-substring (prefix hashes mod 2**64,
vectorised in numpy, then sorted): exact up to hash collisions, whose chance is negligible here
(~ pairs / 2**64). Written by hand: no library offers substring novelty over megabytes at once.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from charnn.brackets import scan
from charnn.vocab import code_points

LENGTHS = (5, 10, 15, 20, 25, 30, 40, 50)
_B = np.uint64(1_000_003)


def _codes(text: str) -> np.ndarray:
    return code_points(text).astype(np.uint64) + np.uint64(1)


_INV_B = np.uint64(pow(int(_B), -1, 1 << 64))  # B is odd, so it has an inverse mod 2**64


def _powers(base: np.uint64, n: int) -> np.ndarray:
    out = np.full(n, base, dtype=np.uint64)
    out[0] = 1
    with np.errstate(over="ignore"):
        return np.cumprod(out, dtype=np.uint64)  # wraps mod 2**64, as intended


class SubstringIndex:
    """Which L-character substrings a text contains, for several L.

    hash(text[a:a+L]) = sum_j text[a+j] * B^j (mod 2**64) = (H[a+L] - H[a]) * B^(-a), with the
    prefix sums H[i] = sum_{j<i} text[j] * B^j: one cumulative sum, then one product per L.
    """

    def __init__(self, text: str):
        self.codes = _codes(text)
        self._prefix, self._inv = _prefix(self.codes)
        self._sets: dict[int, np.ndarray] = {}

    def contains(self, length: int, queries: np.ndarray) -> np.ndarray:
        if length not in self._sets:
            # sorted, duplicates kept: searchsorted needs no more, and np.unique's hashing path
            # is 50x slower than a sort here
            self._sets[length] = np.sort(substring_hashes(length, self._prefix, self._inv))
        table = self._sets[length]
        if len(table) == 0:
            return np.zeros(len(queries), dtype=bool)
        pos = np.minimum(np.searchsorted(table, queries), len(table) - 1)
        return table[pos] == queries


def _prefix(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(codes)
    with np.errstate(over="ignore"):
        prefix = np.zeros(n + 1, dtype=np.uint64)
        prefix[1:] = np.cumsum(codes * _powers(_B, n), dtype=np.uint64)
    return prefix, _powers(_INV_B, n + 1)


def substring_hashes(length: int, prefix: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """Hashes of every length-L substring: (n - L + 1,) uint64."""
    n = len(prefix) - 1
    if n < length:
        return np.zeros(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return (prefix[length:] - prefix[:-length]) * inv[: n - length + 1]


def text_hashes(text: str, length: int) -> np.ndarray:
    return substring_hashes(length, *_prefix(_codes(text)))


@dataclass
class SampleStats:
    samples: int
    chars: int
    novelty: dict[int, float] = field(default_factory=dict)  # L -> share of L-substrings not in training
    longest_copy: int = 0
    js_divergence: dict[int, float] = field(default_factory=dict)  # n -> nats
    known_words: float = float("nan")
    balanced: float = float("nan")  # share of samples with balanced brackets and paired quotes

    def to_dict(self) -> dict:
        return {
            "samples": self.samples,
            "chars": self.chars,
            "novelty": {str(k): v for k, v in self.novelty.items()},
            "longest_copy": self.longest_copy,
            "js_divergence": {str(k): v for k, v in self.js_divergence.items()},
            "known_words": self.known_words,
            "balanced": self.balanced,
        }


def _js(p: Counter, q: Counter) -> float:
    keys = set(p) | set(q)
    if not keys:
        return float("nan")
    tp, tq = sum(p.values()) or 1, sum(q.values()) or 1
    out = 0.0
    for k in keys:
        a, b = p.get(k, 0) / tp, q.get(k, 0) / tq
        m = (a + b) / 2
        if a:
            out += 0.5 * a * math.log(a / m)
        if b:
            out += 0.5 * b * math.log(b / m)
    return out


def _ngrams(texts: list[str], n: int) -> Counter:
    c: Counter = Counter()
    for t in texts:
        c.update(t[i : i + n] for i in range(len(t) - n + 1))
    return c


def balanced(text: str) -> bool:
    """Brackets close in order and never go below zero; double quotes pair up."""
    s = scan(text, "()[]{}")
    return not (s.stray or s.crossed or s.left_open) and text.count('"') % 2 == 0


def sample_stats(samples: list[str], train: SubstringIndex, train_words: set[str], heldout: str, lengths=LENGTHS) -> SampleStats:
    st = SampleStats(len(samples), sum(len(s) for s in samples))
    for L in lengths:
        total = novel = 0
        for s in samples:
            h = text_hashes(s, L)
            total += len(h)
            novel += int((~train.contains(L, h)).sum())
        if total:
            st.novelty[L] = novel / total
    # the longest copied span: binary search on L (a copy of length L contains copies of L-1)
    lo, hi = 0, max((len(s) for s in samples), default=0)

    def any_copy(L: int) -> bool:
        return any(train.contains(L, text_hashes(s, L)).any() for s in samples if len(s) >= L)

    while lo < hi:
        mid = (lo + hi + 1) // 2
        if any_copy(mid):
            lo = mid
        else:
            hi = mid - 1
    st.longest_copy = lo
    for n in (1, 2, 3):
        st.js_divergence[n] = _js(_ngrams(samples, n), _ngrams([heldout], n))
    words = [w for s in samples for w in re.findall(r"\w+", s)]
    if words:
        st.known_words = sum(w in train_words for w in words) / len(words)
    st.balanced = sum(balanced(s) for s in samples) / max(len(samples), 1)
    return st


def read_samples(path) -> list[str]:
    """Samples from `charnn sample --num N` output (separated by lines '----') or a run's
    samples.jsonl (one JSON object with "text" per line)."""
    import json
    from pathlib import Path

    from charnn.errors import CharnnError

    path = Path(path)
    if not path.is_file():
        raise CharnnError(f"no such samples file: {path}")
    raw = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".jsonl":
        out = []
        for k, line in enumerate(raw.splitlines()):
            if line.strip():
                try:
                    out.append(json.loads(line)["text"])
                except (ValueError, KeyError, TypeError):
                    raise CharnnError(
                        f'{path} line {k + 1} is not a JSON object with a "text"; give a samples.jsonl from a run or plain text'
                    ) from None
    else:
        out = [s for s in raw.split("\n----\n")]
    out = [s for s in out if s.strip()]
    if not out:
        raise CharnnError(f"{path} holds no samples")
    return out


def evaluate_samples(samples: list[str], train_text: str, heldout: str, lengths=LENGTHS) -> SampleStats:
    return sample_stats(samples, SubstringIndex(train_text), set(re.findall(r"\w+", train_text)), heldout, lengths)


def snapshot_metrics(text: str, train: SubstringIndex, train_words: set[str]) -> dict:
    """The cheap part of the metrics for one training snapshot: novelty at 10 and 20 characters
    and the share of known words."""
    out = {}
    for L in (10, 20):
        h = text_hashes(text, L)
        if len(h):
            out[f"novel_{L}"] = round(float((~train.contains(L, h)).mean()), 4)
    words = re.findall(r"\w+", text)
    if words:
        out["known_words"] = round(sum(w in train_words for w in words) / len(words), 4)
    return out
