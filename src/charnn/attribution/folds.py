"""`charnn attribute --eval CORPUS`: how well attribution works, measured honestly, beside the
standard methods, in one run.

The labelled documents are split into K folds, stratified by label and seeded; for each fold,
every method learns from the other folds only and names the author of each held-out document
(the folds are written to the output, so anyone can check that no document was scored by a
model that saw it). Documents without a label (the Federalist's disputed and joint essays) are
then attributed by every method trained on all the labelled documents.

Methods:
- charnn: one model conditioned on the label (``--documents --label``), trained for the same
  budget per fold; the label whose conditioning gives the document the fewest bits, calibrated
  on a few of the fold's training documents of each label, wins (uniform prior). One shared
  model: the amount of text per label shapes a label vector, not a whole model, and the
  calibration takes away what is left of it (see charnn.attribution.score).
- Kneser-Ney character n-grams, one per label (Peng et al. 2003): on all of each label's text,
  and on equal amounts of text per label (each label's documents, in a seeded order, up to the
  smallest label's total), because a model that saw more text scores any text better.
- gzip: normalised compression distance to every training document, k nearest neighbours
  (Jiang et al. 2023).
- Burrows' Delta: z-scores of the most frequent words' rates, the nearest label centroid in
  mean absolute difference.
Written here (not taken from a library) because each is a few lines over numpy, zlib and
charnn's own Kneser-Ney, and the folds must be shared by all of them.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charnn.documents import doc_labels, split_documents, unlabelled
from charnn.errors import CharnnError
from charnn.files import write_atomic, write_outputs

METHODS = ("charnn", "ngram-all", "ngram-equal", "gzip-knn", "delta")
PNG_MARKER = b"charnn attribution"
CSV_HEADER = ["method", "accuracy", "correct", "documents"]


# The training settings over the `default` preset for attribution's models: AdamW at 1.2e-2 with
# 32 streams (the default preset before it took Muon). Measured on the Federalist (5 folds, 60 s a
# model, 2026-12-06): 62 of 70 and 11 of 12 disputed essays to Madison with these; 60 of 70 and 6
# of 12 with the default preset's Muon at 8e-3 and 64 streams (docs/attribution-federalist.md).
ATTRIBUTION_TRAIN = {"optimizer": "adamw", "lr": 1.2e-2, "batch_size": 32}


@dataclass
class EvalSettings:
    documents: str
    label: str
    folds: int = 5
    seed: int = 1337
    max_time: float = 60.0  # charnn's training time per model (seconds); or ...
    max_steps: int = 0  # ... steps
    order: int = 4  # the n-gram baselines' order
    words: int = 150  # Burrows' Delta: most frequent words
    k: int = 3  # gzip: neighbours
    calibrate: int = 16  # charnn: reference documents per label for the calibration (0: none)
    preset: str = "default"  # charnn's model and optimiser (tests: tiny) ...
    train: dict | None = None  # ... and TrainConfig fields over it (the CLI: ATTRIBUTION_TRAIN unless --preset)
    extra: dict | None = None  # more TrainConfig fields (tests)


def fold_of(labels: list[str], k: int, seed: int) -> list[int]:
    """Each document's fold: stratified by label (each label's documents dealt round the folds
    in a seeded order)."""
    rng = np.random.default_rng(seed)
    out = [0] * len(labels)
    start = 0
    for name in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == name]
        for j, i in enumerate(rng.permutation(idx).tolist()):
            out[i] = (start + j) % k
        start += len(idx)  # the next label starts where this one stopped: folds stay even
    return out


def load(text: str, s: EvalSettings) -> tuple[list[str], list[str | None]]:
    """The corpus's documents (as written) and their labels (None: unlabelled)."""
    from charnn.data import prepare

    enc = prepare(text)
    docs = split_documents(enc.vocab.decode(enc.ids), s.documents)
    labels = doc_labels(docs, s.label)
    known = [lab for lab in labels if lab is not None]
    if len(set(known)) < 2:
        raise CharnnError("attribution needs documents of at least two labels")
    small = Counter(known).most_common()[-1]
    if small[1] < s.folds:
        raise CharnnError(
            f"the label {small[0]!r} has {small[1]} documents, fewer than --folds {s.folds}; lower "
            f"--folds or leave that label out"
        )
    return docs, labels


# ---- the baselines ---------------------------------------------------------------------------


def _ngram_verdicts(train: list[tuple[str, str]], test: list[str], order: int, equal: bool, seed: int) -> list[str]:
    from charnn.study.ngram import KneserNey

    alphabet = sorted({c for d, _ in train for c in d} | {c for d in test for c in d} | {"\n"})
    index = {c: i for i, c in enumerate(alphabet)}
    ids = lambda t: np.array([index[c] for c in t], dtype=np.int64)  # noqa: E731
    names = sorted({lab for _, lab in train})
    texts = {n: [d for d, lab in train if lab == n] for n in names}
    if equal:  # each label's documents in a seeded order, up to the smallest label's amount of text
        budget = min(sum(map(len, v)) for v in texts.values())
        rng = np.random.default_rng(seed)
        for n in names:
            kept, total = [], 0
            for i in rng.permutation(len(texts[n])).tolist():
                kept.append(texts[n][i][: budget - total])
                total += len(kept[-1])
                if total >= budget:
                    break
            texts[n] = kept
    models = {n: KneserNey(order, len(alphabet), modified=True).fit(ids("\n".join(texts[n]))) for n in names}
    # A floor under each probability: on small texts the modified discounts can come out 0 and a
    # character never seen in a label's text then gets no mass at all (log 0).
    nll = lambda m, d: float(-np.log(np.maximum(m.probs_of(ids(d), 1), 1e-9)).sum())  # noqa: E731
    return [min(names, key=lambda n: nll(models[n], d)) for d in test]


def _gzip_verdicts(train: list[tuple[str, str]], test: list[str], k: int) -> list[str]:
    size = lambda t: len(gzip.compress(t.encode("utf-8")))  # noqa: E731
    sizes = [size(d) for d, _ in train]
    out = []
    for doc in test:
        c = size(doc)
        dist = [(size(doc + " " + d) - min(c, s)) / max(c, s) for (d, _), s in zip(train, sizes)]
        near = np.argsort(dist, kind="stable")[:k]  # equal distances (sizes are whole bytes): the earlier document
        votes = Counter(train[i][1] for i in near)
        top = max(votes.values())
        out.append(next(train[i][1] for i in near if votes[train[i][1]] == top))  # a tie: the nearest
    return out


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _delta_verdicts(train: list[tuple[str, str]], test: list[str], n_words: int) -> list[str]:
    counts = Counter(w for d, _ in train for w in _words(d))
    vocab = [w for w, _ in counts.most_common(n_words)]

    def rates(doc):
        c = Counter(_words(doc))
        total = max(1, sum(c.values()))
        return np.array([c[w] / total for w in vocab])

    X = np.stack([rates(d) for d, _ in train])
    mu, sd = X.mean(0), X.std(0) + 1e-12
    Z = (X - mu) / sd
    names = sorted({lab for _, lab in train})
    cent = {n: Z[[lab == n for _, lab in train]].mean(0) for n in names}
    return [min(names, key=lambda n: float(np.abs((rates(d) - mu) / sd - cent[n]).mean())) for d in test]


# ---- charnn's own ------------------------------------------------------------------------------


def _charnn_verdicts(train: list[str], labels: list[str], test: list[str], run: Path, s: EvalSettings) -> list[str]:
    """Train a labelled model on `train` (documents as written, their `labels`) and attribute
    `test` with it, calibrated on up to s.calibrate training documents of each label."""
    from charnn import checkpoint as ckpt
    from charnn.attribution.score import attribute, pick_references
    from charnn.config import RunConfig, apply_preset
    from charnn.study.grid import train_in_child

    run.mkdir(parents=True, exist_ok=True)
    write_atomic(run.parent / f"{run.name}.txt", "\n".join(train) + "\n")

    def config():
        cfg = RunConfig()
        apply_preset(cfg, s.preset)
        d = cfg.data
        d.text, d.documents, d.label, d.split = str(run.parent / f"{run.name}.txt"), s.documents, s.label, (0.9, 0.1, 0.0)
        for k, v in {
            **(s.train or {}),
            "max_time": s.max_time,
            "max_steps": s.max_steps,
            "seed": s.seed,
            **(s.extra or {}),
        }.items():
            setattr(cfg.train, k, v)
        return cfg.complete().validate()

    train_in_child(run, config, f"attribution model {run.name}")
    loaded = ckpt.load(run, "best")
    model = loaded.build_model()
    reference = pick_references(list(zip(labels, train)), s.calibrate, s.seed)
    return [r.verdict for r in attribute(loaded, model, [(str(i), d) for i, d in enumerate(test)], reference=reference or None)]


def verdicts(
    method: str, train_docs: list[str], train_labels: list[str], test: list[str], run: Path, s: EvalSettings
) -> list[str]:
    if method == "charnn":
        return _charnn_verdicts(train_docs, train_labels, test, run, s)
    clean = [(unlabelled(d, s.label), lab) for d, lab in zip(train_docs, train_labels)]
    test = [unlabelled(d, s.label) for d in test]
    if method.startswith("ngram"):
        return _ngram_verdicts(clean, test, s.order, method == "ngram-equal", s.seed)
    if method == "gzip-knn":
        return _gzip_verdicts(clean, test, s.k)
    return _delta_verdicts(clean, test, s.words)


def evaluate_attribution(text: str, out: Path, s: EvalSettings, progress=print) -> dict:
    """Every method on every fold, then on the unlabelled documents; writes out/attribution.json,
    .csv, .png (the confusion matrices) and folds.json. -> the JSON written."""
    docs, labels = load(text, s)
    out.mkdir(parents=True, exist_ok=True)
    label_of = {i: lab for i, lab in enumerate(labels) if lab is not None}  # the labelled documents
    known = list(label_of)
    unknown = [i for i, lab in enumerate(labels) if lab is None]
    folds = fold_of([label_of[i] for i in known], s.folds, s.seed)
    write_atomic(
        out / "folds.json",
        json.dumps({"folds": [[known[j] for j in range(len(known)) if folds[j] == f] for f in range(s.folds)]}, indent=1),
    )
    got: dict[str, dict[int, str]] = {m: {} for m in METHODS}
    for f in range(s.folds):
        tr = [known[j] for j in range(len(known)) if folds[j] != f]
        te = [known[j] for j in range(len(known)) if folds[j] == f]
        for m in METHODS:
            progress(f"fold {f + 1} of {s.folds}: {m}")
            for i, v in zip(
                te, verdicts(m, [docs[i] for i in tr], [label_of[i] for i in tr], [docs[i] for i in te], out / f"fold-{f + 1}", s)
            ):
                got[m][i] = v
    names = sorted(set(label_of.values()))
    methods: dict[str, dict] = {}
    result = {"settings": vars(s), "labels": names, "documents": len(docs), "labelled": len(known), "methods": methods}
    for m in METHODS:
        right = sum(got[m][i] == label_of[i] for i in known)
        confusion = [[sum(1 for i in known if label_of[i] == a and got[m][i] == b) for b in names] for a in names]
        methods[m] = {
            "accuracy": right / len(known),
            "correct": right,
            "recall": {a: confusion[k][k] / max(1, sum(confusion[k])) for k, a in enumerate(names)},
            "confusion": confusion,
            "verdicts": {str(i): got[m][i] for i in known},
        }
    if unknown:
        for m in METHODS:
            progress(f"the {len(unknown)} unlabelled documents: {m}")
            said = verdicts(m, [docs[i] for i in known], [label_of[i] for i in known], [docs[i] for i in unknown], out / "all", s)
            methods[m]["unlabelled"] = {_title(docs[i]): x for i, x in zip(unknown, said)}
    _write(result, out)
    return result


def _title(doc: str) -> str:
    return doc.strip().splitlines()[0][:60] if doc.strip() else "(empty)"


def _write(result: dict, out: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER + [f"recall {n}" for n in result["labels"]])
    for m, r in result["methods"].items():
        w.writerow(
            [m, f"{r['accuracy']:.4f}", r["correct"], result["labelled"]] + [f"{r['recall'][n]:.4f}" for n in result["labels"]]
        )
    write_outputs(out, "attribution", PNG_MARKER, CSV_HEADER, lambda p: _plot(result, p), buf.getvalue())
    write_atomic(out / "attribution.json", json.dumps(result, indent=1) + "\n")


def _plot(result: dict, path) -> None:
    from charnn.plots import pyplot

    plt = pyplot()

    names, methods = result["labels"], list(result["methods"])
    fig, axes = plt.subplots(1, len(methods), figsize=(3 * len(methods), 3.2))
    for ax, m in zip(axes, methods):
        c = np.array(result["methods"][m]["confusion"])
        ax.imshow(c, cmap="Blues")
        for a in range(len(names)):
            for b in range(len(names)):
                ax.text(b, a, str(c[a, b]), ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=45, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_title(f"{m}: {result['methods'][m]['accuracy']:.0%}", fontsize=9)
    fig.supxlabel("attributed to", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110, metadata={"Description": PNG_MARKER.decode()})
    plt.close(fig)


def table(result: dict) -> str:
    names = result["labels"]
    lines = [
        f"| method | accuracy ({result['labelled']} documents, {result['settings']['folds']}-fold) | "
        + " | ".join(f"recall {n}" for n in names)
        + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for m, r in result["methods"].items():
        lines.append(
            f"| {m} | {r['accuracy']:.1%} ({r['correct']}) | " + " | ".join(f"{r['recall'][n]:.0%}" for n in names) + " |"
        )
    first = next(iter(result["methods"].values()))
    if "unlabelled" in first:
        lines += ["", "| document | " + " | ".join(result["methods"]) + " |", "|---|" + "---|" * len(result["methods"])]
        for title in first["unlabelled"]:
            lines.append(f"| {title} | " + " | ".join(r["unlabelled"][title] for r in result["methods"].values()) + " |")
    return "\n".join(lines) + "\n"
