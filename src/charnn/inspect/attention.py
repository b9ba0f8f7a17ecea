"""What a transformer's heads attend to: every head's attention while reading a text, and the
heads ranked, the way ``find`` ranks an LSTM's cells, by how much weight they put on a
character that a reader can name:

- the previous character;
- the newline that started the current line;
- the matching opener: the innermost open bracket ( [ {, or the opening double quote;
- copying ("induction"): the character that followed the last earlier occurrence of the
  current two characters, which is what the text would repeat if it repeated itself.

A head's score for a pattern is the mean weight it puts on that character, over the characters
where the pattern names one that the head can see; beside it, what spreading the weight evenly
over the visible characters would give (chance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from charnn.brackets import scan
from charnn.errors import CharnnError
from charnn.inspect.features import _quotes
from charnn.subject import Subject
from charnn.transformer import CharTransformer

PATTERNS = {
    "previous": "the previous character",
    "line": "the newline that started the line",
    "opener": "the matching open bracket or quote",
    "copy": "copying: what followed the last occurrence of the current two characters",
}


@dataclass
class HeadScore:
    layer: int
    head: int
    score: float  # mean weight on the pattern's character
    chance: float  # mean weight an even spread over the visible characters would give


@dataclass
class PatternResult:
    name: str
    about: str
    queries: int  # characters where the pattern names a visible character
    top: list[HeadScore]


@dataclass
class Attention:
    att: np.ndarray  # (L, heads, N, block) float32, see CharTransformer.read_inside
    context: np.ndarray  # (N,) characters visible before each
    text: str


def require_attention(subject: Subject) -> None:
    if subject.model.cfg.recurrent:
        raise CharnnError(
            f"inspect attention reads a transformer's attention; {subject.loaded.path} is a "
            f"{subject.model.cfg.describe()}: use charnn inspect cells or inspect find"
        )


def read_attention(subject: Subject) -> Attention:
    require_attention(subject)
    model = subject.model
    assert isinstance(model, CharTransformer)  # require_attention said so
    _, inside = model.read_inside(torch.as_tensor(np.asarray(subject.ids, dtype=np.int64)))
    return Attention(inside["att"].numpy(), inside["context"].numpy(), subject.text)


def targets(text: str) -> dict[str, np.ndarray]:
    """For each pattern, (N,) the position of the character it names for each character of
    text, or -1 where it names none."""
    n = len(text)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    idx = np.arange(n)
    prev = idx - 1
    newline = np.where(codes == 10, idx, -1)
    line = np.concatenate([[-1], np.maximum.accumulate(newline)[:-1]]) if n else newline  # before t, not at t
    # the opener: innermost bracket open before t (scan's state after t - 1), else the open quote
    inner = np.array([-1] + (scan(text, depths=True).innermost or [])[:-1], dtype=np.int64)[:n]
    quote_at = np.maximum.accumulate(np.where(codes == ord('"'), idx, -1)) if n else idx
    inside = np.concatenate([[0.0], _quotes(codes)[:-1]])[:n] > 0  # inside a quote opened before t
    quote = np.where(inside, np.concatenate([[-1], quote_at[:-1]])[:n], -1)
    opener = np.maximum(inner, quote)  # the innermost of the two
    copy = np.full(n, -1, dtype=np.int64)
    last: dict[str, int] = {}
    for t in range(1, n):
        pair = text[t - 1 : t + 1]
        s = last.get(pair)
        if s is not None and s + 1 < t:
            copy[t] = s + 1
        last[pair] = t
    return {"previous": prev, "line": line, "opener": opener, "copy": copy}


def rank_heads(a: Attention, top: int = 3) -> list[PatternResult]:
    """For each pattern, the `top` heads by mean weight on the character it names, best first."""
    L, H, N, block = a.att.shape
    out = []
    for name, tgt in targets(a.text).items():
        back = np.arange(N) - tgt  # how far back the named character is
        ok = (tgt >= 0) & (back >= 1) & (back <= a.context)
        rows = np.nonzero(ok)[0]
        if not len(rows):
            out.append(PatternResult(name, PATTERNS[name], 0, []))
            continue
        w = a.att[:, :, rows, back[rows]]  # (L, H, Q)
        chance = float(np.mean(1.0 / (a.context[rows] + 1)))
        scores = w.mean(-1)
        order = np.argsort(-scores, axis=None)[:top]
        best = [HeadScore(int(k // H), int(k % H), float(scores.flat[k]), chance) for k in order]
        out.append(PatternResult(name, PATTERNS[name], len(rows), best))
    return out
