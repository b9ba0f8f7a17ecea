"""Who wrote it: score each document under every label of a labelled run, in bits per character,
and turn the scores into a posterior over the labels.

The run is one model conditioned on the label (``--documents ... --label``), so every label is
scored by the same weights: the amount of text each label had in training shapes its label
vector, not a separate model's whole capacity (per-author models trained on unequal amounts of
text favour the author with more: see issue #36). The posterior is Bayes' rule over the
document's total log-likelihood under each label, with a uniform prior (default) or the training
split's share of documents per label.

Calibration. One shared model still learns some labels better than others (the label with the
most text trains its vector most), and a better-learned label lowers the bits of *every* text read
under it, which pulls documents towards it. So the log-likelihoods are calibrated first: each
label's offset is its mean bits per character over reference documents of known labels (a few of
each label, from the training split), the mean taken per true label and then over the labels, so
that neither the label with most documents nor a label's own documents set it; a document's score
under a label is its bits there less the offset. What is left is how much better the label fits
this document than it fits text in general (score normalisation, as speaker verification's Z-norm
does per speaker). Measured on the Federalist in docs/attribution-federalist.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from charnn.documents import END, labelled_ids, split_documents, unlabelled
from charnn.errors import CharnnError
from charnn.evaluate import evaluate_rows, model_text

MAX_DOCUMENTS = 10_000
CALIBRATE = 16  # reference documents per label for the calibration (charnn attribute --calibrate)
MAX_CALIBRATE = 100


@dataclass
class Attribution:
    name: str  # the file, or the document's first characters
    chars: int  # characters scored (the document and its end symbol)
    bpc: dict[str, float] = field(default_factory=dict)  # label -> bits per character
    posterior: dict[str, float] = field(default_factory=dict)
    calibrated: dict[str, float] = field(default_factory=dict)  # label -> bits less the label's offset (if calibrated)

    @property
    def verdict(self) -> str:
        return max(self.posterior, key=lambda k: self.posterior[k])

    def to_dict(self) -> dict:
        return {
            "document": self.name,
            "chars": self.chars,
            "bpc": self.bpc,
            "posterior": self.posterior,
            "verdict": self.verdict,
            **({"calibrated_bpc": self.calibrated} if self.calibrated else {}),
        }


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


def _nats(loaded, model, name: str, doc: str, known: set[str]) -> tuple[np.ndarray, int]:
    """A document's nats per character under each label, and the characters scored (`known`:
    the characters of the model's vocabulary)."""
    regex = loaded.config.data.label
    doc = unlabelled(doc, regex) if regex else doc  # a document that names its label does not tell the model
    # characters the model never saw are left out: they would cost the same under every label
    doc = "".join(c for c in doc if c in known)
    try:
        ids = [labelled_ids(loaded.vocab, doc, k) for k in range(len(loaded.meta["labels"]))]
    except CharnnError as e:
        raise CharnnError(f"{name}: {e}") from None
    scores = evaluate_rows(model, ids)
    return np.array([s.loss for s in scores]), scores[0].chars


def offsets(loaded, model, reference: list[tuple[str, str]]) -> np.ndarray:
    """Each label's calibration offset in nats per character (see the module's docstring) from
    reference documents (label, text): the mean, per true label, of a document's nats per character
    under each label, then the mean over the true labels."""
    names = loaded.meta["labels"]
    known = set(loaded.vocab.decode(range(len(loaded.vocab))))
    per: dict[str, list[np.ndarray]] = {}
    for k, (label, doc) in enumerate(reference):
        if label not in names:
            raise CharnnError(f"calibration: {label!r} is not one of the run's labels ({', '.join(names)})")
        per.setdefault(label, []).append(_nats(loaded, model, f"reference document {k + 1}", doc, known)[0])
    if not per:
        raise CharnnError("calibration needs reference documents of known labels")
    return np.mean([np.mean(v, axis=0) for v in per.values()], axis=0)


def attribute(
    loaded, model, docs: list[tuple[str, str]], prior: str = "uniform", reference: list[tuple[str, str]] | None = None
) -> list[Attribution]:
    """Each document's bits per character under every label, and the posterior over labels;
    with `reference` documents (label, text), calibrated first (see the module's docstring)."""
    names = loaded.meta.get("labels")
    if not names:
        raise CharnnError("attribution needs a run trained on labelled documents (--documents SPLIT --label REGEX)")
    log_prior = np.log(prior_of(loaded, prior))
    offset = offsets(loaded, model, reference) if reference else np.zeros(len(names))
    known = set(loaded.vocab.decode(range(len(loaded.vocab))))
    out = []
    for name, doc in docs:
        nats, chars = _nats(loaded, model, name, doc, known)
        logpost = log_prior - (nats - offset) * chars
        post = np.exp(logpost - logpost.max())
        post /= post.sum()
        bits = nats / math.log(2)
        out.append(
            Attribution(
                name,
                chars,
                {n: float(b) for n, b in zip(names, bits)},
                {n: float(p) for n, p in zip(names, post)},
                {n: float(b - o / math.log(2)) for n, b, o in zip(names, bits, offset)} if reference else {},
            )
        )
    return out


def training_references(loaded, per_label: int, seed: int = 0) -> list[tuple[str, str]]:
    """Up to `per_label` documents of each label from the run's training split (a seeded choice):
    the calibration's reference documents. Needs the run's text where training read it."""
    V = len(loaded.vocab)
    ids = np.asarray(model_text(loaded, split="train", labelled_ok=True).ids)
    ends = np.flatnonzero(ids % V == int(loaded.vocab.encode(END)[0]))
    names = loaded.meta["labels"]
    by: dict[str, list[str]] = {}
    for a, b in zip(np.concatenate([[0], ends[:-1] + 1]), ends):
        if b > a:
            by.setdefault(names[int(ids[a]) // V], []).append(loaded.vocab.decode(ids[a:b] % V))
    return pick_references([(label, d) for label, docs in by.items() for d in docs], per_label, seed)


def pick_references(labelled: list[tuple[str, str]], per_label: int, seed: int) -> list[tuple[str, str]]:
    """Up to `per_label` of the (label, document) pairs of each label, a seeded choice (labels in
    order, each label's documents in their order)."""
    rng = np.random.default_rng(seed)
    by: dict[str, list[str]] = {}
    for label, doc in labelled:
        by.setdefault(label, []).append(doc)
    return [
        (label, docs[i]) for label, docs in sorted(by.items()) for i in sorted(rng.permutation(len(docs))[:per_label].tolist())
    ]
