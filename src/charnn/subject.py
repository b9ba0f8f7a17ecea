"""What the analyses read: a trained run and a text, in the model's vocabulary (a `Subject`).

Shared by charnn.inspect (inside the model) and charnn.study (comparisons with other models)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from charnn import checkpoint as ckpt
from charnn.errors import CharnnError
from charnn.evaluate import model_text, string_ids
from charnn.model import Model
from charnn.vocab import TokenVocab, Vocab

CONTEXT = 20_000


@dataclass
class Subject:
    model: Model
    vocab: Vocab
    loaded: ckpt.Checkpoint
    ids: np.ndarray  # (N,) the text in the model's ids
    text: str  # the same text, one character per id (bytes shown as Latin-1 / U+FFFD)
    what: str  # says where the text came from
    context: str = ""  # up to CONTEXT characters of the corpus just before `text`, for features
    context_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # the same, as ids

    @property
    def chars(self) -> np.ndarray:
        """The units the model predicts and a page shows, one per id: a labelled run's ids are
        unit + V * label (what the model reads), its units ids % V; any other run's are its ids."""
        return np.asarray(self.ids, dtype=np.int64) % len(self.vocab)


def display_chars(vocab: Vocab) -> list[str]:
    """One printable-or-whitespace character per id, for pages and features (a token model: each
    token's text, which may be several characters)."""
    if isinstance(vocab, TokenVocab):
        return vocab.pieces()
    if vocab.unit == "char":
        return [chr(c) for c in vocab.codes]
    return [chr(c) if c < 128 else "\ufffd" for c in vocab.codes]


def require_characters(loaded: ckpt.Checkpoint, what: str) -> None:
    """Refuse a token model in an analysis that lines its numbers up with characters (features,
    n-gram models of characters, per-character losses)."""
    if isinstance(loaded.vocab, TokenVocab):
        raise CharnnError(
            f"{what} reads a model one character at a time, and {loaded.path} reads byte-pair tokens "
            f"(--unit bpe); with a token model use charnn sample, eval, inspect cells or "
            f"inspect saturation"
        )


def open_subject(
    run: str | Path,
    text: str | None = None,
    split: str | None = None,
    chars: int = 0,
    which: str = "best",
    device: str = "cpu",
    tokens_ok: bool = False,
    what: str = "this analysis",
    labelled_ok: bool = False,
) -> Subject:
    """Load a run's model and the text to inspect: a file (`text`) or a split of its own corpus.
    A token model is refused (see ``require_characters``) unless `tokens_ok`: then `chars` counts
    tokens and the subject's text is the tokens' text, which is not one character per id.
    labelled_ok: a run conditioned on labels is read with each document's label (its split's, or
    the one --label finds in each document of a file); otherwise it is refused (the analyses
    that set n-gram models of characters beside the model do not read labels yet)."""
    loaded = ckpt.load(run, which)
    if not tokens_ok:
        require_characters(loaded, what)
    return subject_of_split(loaded, loaded.build_model(device), split, chars, text, labelled_ok)


def subject_of_split(
    loaded: ckpt.Checkpoint, model: Model, split: str | None, chars: int = 0, text: str | None = None, labelled_ok: bool = False
) -> Subject:
    """A subject from a loaded model: the first `chars` characters (0: all) of a split of its own
    corpus or of a file (`text`), with the corpus before it as context."""
    source = model_text(loaded, text, split, context=CONTEXT, labelled_ok=labelled_ok)
    ids, what, before = source.ids, source.what, source.before
    if chars and len(ids) > chars:
        ids = ids[:chars]
    return _subject(loaded, model, np.asarray(ids), what, before)


def subject_of_string(loaded: ckpt.Checkpoint, model: Model, text: str, what: str = "the text") -> Subject:
    """A subject from a string in memory (the Python API's texts), read as a file of it is."""
    return _subject(loaded, model, string_ids(loaded, text, what), what, np.zeros(0, dtype=np.int64))


def _subject(loaded: ckpt.Checkpoint, model: Model, ids: np.ndarray, what: str, before: np.ndarray) -> Subject:
    if len(ids) < 2:
        raise CharnnError(f"{what} holds fewer than 2 characters; give a longer text")
    table = np.array(display_chars(loaded.vocab), dtype=object)
    return Subject(
        model,
        loaded.vocab,
        loaded,
        ids,
        "".join(table[ids.astype(np.int64) % len(table)]),
        what,
        "".join(table[before.astype(np.int64) % len(table)]),
        before.astype(np.int64),
    )


def training_ids(subject: Subject) -> np.ndarray:
    """The run's own training split, in its model's ids (what its n-gram baselines train on)."""
    return model_text(subject.loaded, split="train").ids


def ngram_probs_over(subject: Subject, ngram) -> np.ndarray:
    """P(ids[t]) for every t of the subject's text under an n-gram model, read with the corpus
    text before it as context."""
    history = np.concatenate([np.asarray(subject.context_ids), np.asarray(subject.ids)])
    return ngram.probs_of(history, len(subject.context_ids))
