"""Error analysis (paper, section 4.4): where do a model's errors come from?

An error is a character to which the model gives probability below 0.5. Oracles peel the
errors off in the paper's order, each taking the errors it explains from what is left:

1. n-gram: a 1- to 9-gram model (modified Kneser-Ney, trained on the run's training split)
   gives the character probability 0.5 or more;
2. dynamic memory: the character and the MEMORY_N characters before it occurred together
   earlier in the text being scored (a name seen a page ago);
3. rare words: the character is inside a word seen at most RARE times in the training text;
4. word model: the character starts a word (after a space, newline, quote or bracket);
5. punctuation: the character is punctuation;
6. boost: everything left.
"""

from __future__ import annotations

import csv
import io
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from charnn.errors import CharnnError
from charnn.files import write_outputs
from charnn.subject import Subject, ngram_probs_over, training_ids

CATEGORIES = ("n-gram", "dynamic memory", "rare words", "word model", "punctuation", "boost")
MEMORY_N = 10
RARE = 5
MAX_NGRAM = 9
WORD_START_AFTER = set(" \n\t\"'([{")
CSV_HEADER = ["category", "errors", "share"]
PNG_MARKER = b"charnn error analysis"


@dataclass
class ErrorReport:
    chars: int
    errors: int
    counts: dict[str, int] = field(default_factory=dict)
    compare: dict[str, tuple[int, int]] | None = None  # category -> (errors here, of them fixed by the other)

    def share(self, cat: str) -> float:
        return self.counts.get(cat, 0) / self.errors if self.errors else 0.0

    def to_dict(self) -> dict:
        d: dict = {"chars": self.chars, "errors": self.errors, "categories": {}}
        for c in CATEGORIES:
            d["categories"][c] = {"errors": self.counts.get(c, 0), "share": self.share(c)}
            if self.compare:
                d["categories"][c]["fixed_by_other"] = self.compare[c][1]
        return d

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_HEADER + (["fixed_by_other"] if self.compare else []))
        for c in CATEGORIES:
            row = [c, self.counts.get(c, 0), f"{self.share(c):.6f}"]
            if self.compare:
                row.append(self.compare[c][1])
            w.writerow(row)
        return buf.getvalue()


def model_probs(subject: Subject) -> np.ndarray:
    """P(ids[t] | ids[:t]) for t >= 1 of the subject's text, from the RNN: (N,), NaN at t = 0."""
    from charnn.evaluate import char_losses

    nll = char_losses(subject.model, subject.ids)
    p = np.full(len(subject.ids), np.nan)
    p[1:] = np.exp(-nll[:-1])
    return p


def ngram_probs(subject: Subject, train: np.ndarray, orders=range(1, MAX_NGRAM + 1)) -> dict[int, np.ndarray]:
    """P(ids[t]) for t >= 0 of the subject's text under n-gram models trained on `train` ids."""
    from charnn.study.ngram import KneserNey

    return {n: ngram_probs_over(subject, KneserNey(n, len(subject.vocab), modified=True).fit(train)) for n in orders}


def categorise(text: str, p_model: np.ndarray, p_ngrams: dict[int, np.ndarray], train_words: Counter) -> np.ndarray:
    """Category index (into CATEGORIES) of every error, -1 for characters that are not errors."""
    n = len(text)
    err = np.nan_to_num(p_model, nan=1.0) < 0.5
    cat = np.full(n, -1)
    left = err.copy()
    # 1. n-gram oracle
    best = np.max(np.stack(list(p_ngrams.values())), axis=0) if p_ngrams else np.zeros(n)
    hit = left & (best >= 0.5)
    cat[hit], left = 0, left & ~hit
    # 2. dynamic memory: text[t-N .. t] occurred before, entirely within text[:t]
    from charnn.samplestats import text_hashes

    L = MEMORY_N + 1
    if n >= L:
        h = text_hashes(text, L)  # h[s] for the substring starting at s, ending at s + L - 1
        first_seen: dict[int, int] = {}
        seen_before = np.zeros(n, dtype=bool)
        for s, key in enumerate(h.tolist()):
            if key in first_seen:
                seen_before[s + L - 1] = True
            else:
                first_seen[key] = s
        hit = left & seen_before
        cat[hit], left = 1, left & ~hit
    # 3. rare words and 4. word starts: the word around each character
    in_rare = np.zeros(n, dtype=bool)
    starts = np.zeros(n, dtype=bool)
    for m in re.finditer(r"\w+", text):
        if train_words.get(m.group(), 0) <= RARE:
            in_rare[m.start() : m.end()] = True
        if m.start() == 0 or text[m.start() - 1] in WORD_START_AFTER:
            starts[m.start()] = True
    hit = left & in_rare
    cat[hit], left = 2, left & ~hit
    hit = left & starts
    cat[hit], left = 3, left & ~hit
    # 5. punctuation
    punct = np.array([ch in string.punctuation for ch in text])
    hit = left & punct
    cat[hit], left = 4, left & ~hit
    cat[left] = 5
    return cat


def load_ngram_for(subject: Subject, path):
    """A model saved by `charnn ngram --save`, checked to share the run's vocabulary."""
    from charnn.study.ngram import KneserNey
    from charnn.vocab import Vocab

    model, vocab_json = KneserNey.load(path)
    if Vocab.from_json(vocab_json) != subject.vocab:
        raise CharnnError(
            f"the n-gram model {path} was trained with another vocabulary than this run's; "
            f"save one with `charnn ngram` on the run's own text"
        )
    return model


def analyze_errors(subject: Subject, other: Subject | None = None, baseline_order: int | str = 0) -> ErrorReport:
    """baseline_order: an n-gram order to train here, or the path of a saved n-gram model."""
    p = model_probs(subject)
    train = training_ids(subject)
    p_ng = ngram_probs(subject, train)
    words = Counter(re.findall(r"\w+", subject.vocab.decode(train)))
    cat = categorise(subject.text, p, p_ng, words)
    errors = int((cat >= 0).sum())
    rep = ErrorReport(int(np.isfinite(p).sum()), errors, {c: int((cat == k).sum()) for k, c in enumerate(CATEGORIES)})
    if other is not None or baseline_order:
        if other is not None:
            if other.text != subject.text:
                raise CharnnError("--compare needs a run trained on the same text and split")
            q = model_probs(other)
        elif isinstance(baseline_order, int):
            if baseline_order not in p_ng:
                p_ng.update(ngram_probs(subject, train, [baseline_order]))
            q = p_ng[baseline_order].copy()
        else:
            q = ngram_probs_over(subject, load_ngram_for(subject, baseline_order))
        q[0] = np.nan  # the first character is not scored for the RNN either
        fixed = (cat >= 0) & (np.nan_to_num(q, nan=0.0) >= 0.5)
        rep.compare = {c: (int((cat == k).sum()), int((fixed & (cat == k)).sum())) for k, c in enumerate(CATEGORIES)}
    return rep


def plot(rep: ErrorReport, path: Path, title: str, other_label: str = "") -> None:
    from charnn.plots import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7.5, 4))
    x = np.arange(len(CATEGORIES))
    ax.bar(x, [rep.counts.get(c, 0) for c in CATEGORIES], color="tab:blue", label="errors")
    if rep.compare:
        ax.bar(x, [rep.compare[c][1] for c in CATEGORIES], color="tab:orange", label=f"of them right in {other_label}")
    for k, c in enumerate(CATEGORIES):
        ax.annotate(
            f"{100 * rep.share(c):.0f}%",
            (k, rep.counts.get(c, 0)),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            fontsize=8,
        )
    ax.set_xticks(x, CATEGORIES)
    ax.set_ylabel("errors (p < 0.5)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Description": PNG_MARKER.decode()})
    plt.close(fig)


def write(rep: ErrorReport, out: Path, title: str, other_label: str = "") -> tuple[Path, Path]:
    return write_outputs(out, "errors", PNG_MARKER, CSV_HEADER, lambda p: plot(rep, p, title, other_label), rep.to_csv())
