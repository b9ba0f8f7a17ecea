"""Long-range dependencies (paper, section 4.3): how well is a closing brace predicted, as a
function of how far back its opening brace is, by the RNN and by an n-gram model?

An n-gram model of order n cannot see an opening brace more than n-1 characters back; an RNN
can, if it learned to. We score every `}` of the run's test split whose matching `{` is inside
the split, by both models, and bin the losses by that distance.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from charnn.brackets import scan
from charnn.errors import CharnnError
from charnn.files import write_outputs
from charnn.subject import Subject, ngram_probs_over, training_ids

BINS = (1, 6, 11, 21, 41, 61, 101, 201, 401, 10**9)  # left edges: 1-5, 6-10, ..., 401+
CSV_HEADER = ["distance_from", "distance_to", "braces", "rnn_loss", "ngram_loss"]
PNG_MARKER = b"charnn braces"


def matching_distances(text: str) -> dict[int, int]:
    """Position of each '}' -> distance back to its matching '{' (unmatched ones are left out)."""
    return {close: close - open_ for close, open_ in scan(text, "{}").matches.items()}


@dataclass
class BraceReport:
    order: int
    rows: list[tuple[int, int, int, float, float]] = field(default_factory=list)  # from, to, n, rnn, ngram
    braces: int = 0

    def to_dict(self) -> dict:
        return {
            "order": self.order,
            "braces": self.braces,
            "rows": [{"from": a, "to": b, "braces": n, "rnn": r, "ngram": g} for a, b, n, r, g in self.rows],
        }

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_HEADER)
        for r in self.rows:
            w.writerow([r[0], r[1], r[2], f"{r[3]:.6f}", f"{r[4]:.6f}"])
        return buf.getvalue()


def brace_losses(subject: Subject, ngram_order: int = 20, ngram_file=None) -> BraceReport:
    """subject: the run and its test split (open_subject(run, split="test")); the n-gram model is
    trained here on the run's training split, or read from `ngram_file` (charnn ngram --save)."""
    from charnn.evaluate import char_losses
    from charnn.study.ngram import KneserNey
    from charnn.study.oracles import load_ngram_for

    dist = matching_distances(subject.text)
    if not dist:
        raise CharnnError(f"{subject.what} has no matched {{ }} pairs; this analysis is for code")
    pos = np.array(sorted(dist))
    pos = pos[pos > 0]
    d = np.array([dist[p] for p in pos])
    rnn_nll = char_losses(subject.model, subject.ids)
    rnn = rnn_nll[pos - 1]  # the loss of predicting the '}' at p from the characters before it
    if ngram_file is not None:
        ngram = load_ngram_for(subject, ngram_file)
    else:
        ngram = KneserNey(ngram_order, len(subject.vocab), modified=True).fit(training_ids(subject))
    ng = -np.log(ngram_probs_over(subject, ngram)[pos])  # P(ids[t]) for t = 0.. of the split
    rep = BraceReport(ngram.order, braces=len(pos))
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        m = (d >= lo) & (d < hi)
        if m.any():
            rep.rows.append((lo, hi - 1, int(m.sum()), float(rnn[m].mean()), float(ng[m].mean())))
    return rep


def plot(rep: BraceReport, path: Path, title: str) -> None:
    from charnn.plots import pyplot

    plt = pyplot()

    labels = [f"{a}-{b}" if b < 10**8 else f"{a}+" for a, b, *_ in rep.rows]
    x = np.arange(len(rep.rows))
    fig, ax = plt.subplots(figsize=(7.5, 4))
    ax.plot(x, [r[3] for r in rep.rows], "o-", label="RNN")
    ax.plot(x, [r[4] for r in rep.rows], "s--", label=f"{rep.order}-gram (modified Kneser-Ney)")
    ax.set_xticks(x, labels, rotation=30)
    for k, r in enumerate(rep.rows):
        ax.annotate(
            f"{r[2]}", (k, max(r[3], r[4])), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=7, color="0.4"
        )
    ax.set_xlabel("characters back to the matching '{'")
    ax.set_ylabel("loss on '}' (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Description": PNG_MARKER.decode()})
    plt.close(fig)


def write(rep: BraceReport, out: Path, title: str) -> tuple[Path, Path]:
    return write_outputs(out, "braces", PNG_MARKER, CSV_HEADER, lambda p: plot(rep, p, title), rep.to_csv())


def fmt(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.3f}"
