"""Who wrote it: score each document under every label of a labelled run, in bits per character,
and turn the scores into a posterior over the labels.

The run is one model conditioned on the label (``--documents ... --label``), so every label is
scored by the same weights: the amount of text each label had in training shapes its label
vector, not a separate model's whole capacity (per-author models trained on unequal amounts of
text favour the author with more: see issue #36). The posterior is Bayes' rule over the
document's total log-likelihood under each label, with a uniform prior (default) or the training
split's share of documents per label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from charnn.documents import labelled_ids, split_documents, unlabelled
from charnn.errors import CharnnError
from charnn.evaluate import evaluate

MAX_DOCUMENTS = 10_000


@dataclass
class Attribution:
    name: str  # the file, or the document's first characters
    chars: int  # characters scored (the document and its end symbol)
    bpc: dict[str, float] = field(default_factory=dict)  # label -> bits per character
    posterior: dict[str, float] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return max(self.posterior, key=lambda k: self.posterior[k])

    def to_dict(self) -> dict:
        return {"document": self.name, "chars": self.chars, "bpc": self.bpc, "posterior": self.posterior,
                "verdict": self.verdict}


def documents_of(path: str, spec: str) -> list[tuple[str, str]]:
    """(name, text) of each document: a folder's files (each one document, sorted by name), or a
    file's documents as the run cuts them (--documents)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        out = [(f.name, _read(f).strip("\r\n")) for f in files]
    elif p.is_file():
        docs = split_documents(_read(p), spec)
        out = [(f"{k + 1}: {d[:40]!r}", d) for k, d in enumerate(docs)]
    else:
        raise CharnnError(f"{path}: no such file or folder")
    out = [(n, d) for n, d in out if d.strip()]
    if not out:
        raise CharnnError(f"{path} holds no document to attribute")
    if len(out) > MAX_DOCUMENTS:
        raise CharnnError(f"{path} holds {len(out):,} documents; attribute at most {MAX_DOCUMENTS:,} at once")
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CharnnError(f"{path} is not UTF-8 text") from None


def prior_of(loaded, prior: str) -> np.ndarray:
    names = loaded.meta["labels"]
    if prior == "uniform":
        return np.full(len(names), 1 / len(names))
    counts = np.asarray(loaded.meta.get("label_counts") or [1] * len(names), dtype=np.float64)
    return counts / counts.sum()


def attribute(loaded, model, docs: list[tuple[str, str]], prior: str = "uniform") -> list[Attribution]:
    """Each document's bits per character under every label, and the posterior over labels."""
    names = loaded.meta.get("labels")
    if not names:
        raise CharnnError("attribution needs a run trained on labelled documents (--documents SPLIT --label REGEX)")
    log_prior = np.log(prior_of(loaded, prior))
    regex = loaded.config.data.label
    out = []
    known = set(loaded.vocab.decode(range(len(loaded.vocab))))
    for name, doc in docs:
        doc = unlabelled(doc, regex) if regex else doc  # a document that names its label does not tell the model
        # characters the model never saw are left out: they would cost the same under every label
        doc = "".join(c for c in doc if c in known)
        try:
            ids = [labelled_ids(loaded.vocab, doc, k) for k in range(len(names))]
        except CharnnError as e:
            raise CharnnError(f"{name}: {e}") from None
        scores = [evaluate(model, x, streams=1) for x in ids]
        nats = np.array([s.loss * s.chars for s in scores])
        logpost = log_prior - nats
        post = np.exp(logpost - logpost.max())
        post /= post.sum()
        out.append(Attribution(name, scores[0].chars, {n: s.loss / math.log(2) for n, s in zip(names, scores)},
                               {n: float(p) for n, p in zip(names, post)}))
    return out
