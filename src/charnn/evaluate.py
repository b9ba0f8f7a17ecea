"""Score a model on text: loss, bits per character and perplexity of a split or any file, and the
loss at every position (for the analyses). The model must be in eval mode (``build_model`` gives
one; the trainer switches its own model around each evaluation): nothing here changes a module,
so one model can serve many callers at once."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from charnn.data import NotUTF8, eval_windows, prepare
from charnn.devices import eval_streams, wide_float
from charnn.documents import END, doc_labels, framed, labelled_ids, split_documents, unlabelled
from charnn.errors import CharnnError
from charnn.model import Model, targets
from charnn.vocab import TokenVocab


@dataclass
class Text:
    """A text in a model's vocabulary: ids (N,), where it came from, and (for a split) up to
    `context` ids of the corpus just before it."""

    ids: np.ndarray
    what: str
    before: np.ndarray


def require_unlabelled(loaded) -> None:
    """Refuse a model conditioned on labels in an analysis that sets n-gram models of characters
    beside it (its ids carry labels: char + V * label)."""
    if loaded.config.model.labels:
        raise CharnnError(
            "this analysis reads a model conditioned on labels, which it does not support yet; "
            "charnn eval, sample --label and attribute do"
        )


def model_text(loaded, text: str | None = None, split: str | None = None, context: int = 0, labelled_ok: bool = False) -> Text:
    """A file (`text`) or a split of the run's own corpus (default val), encoded as the run was and
    in the model's vocabulary (a character the model never saw is an error naming it).

    loaded: a ``checkpoint.Checkpoint``. A token model's text is cut on characters first and then
    tokenised with the model's own tokenizer, exactly as training cut it.
    """
    d = loaded.config.data
    if not labelled_ok:
        require_unlabelled(loaded)
    before = np.zeros(0, dtype=np.int64)
    tokens = loaded.vocab if isinstance(loaded.vocab, TokenVocab) else None
    unit = "char" if tokens is not None else d.unit
    if text is not None:
        try:
            enc = prepare(text, unit=unit, encoding_errors=d.encoding_errors)
        except NotUTF8 as e:  # the model decides how text is read: there is no --encoding-errors to pass here
            raise CharnnError(
                f"{e.path} is not valid UTF-8 at byte offset {e.offset}; this model reads Unicode "
                f"characters, so it can only score UTF-8 text (a model trained with --unit bytes "
                f"scores any file)"
            ) from None
        if d.documents:  # the file's documents, framed as training framed them (string_ids)
            return Text(string_ids(loaded, enc.vocab.decode(enc.ids), text), text, before)
        ids = np.asarray(enc.remap(loaded.vocab, text).ids) if tokens is None else tokens.encode(enc.vocab.decode(enc.ids))
        return Text(ids, text, before)
    split = split or "val"
    if split not in ("train", "val", "test"):
        raise CharnnError(f"split: {split!r} is not one of train, val, test")
    enc = prepare(
        d.text,
        d.include,
        unit,
        d.encoding_errors,
        loaded.config.train.seed,
        split=d.split,
        documents=d.documents,
        label=(d.label, d.labels_file),
    )
    enc = enc.remap(loaded.vocab) if tokens is None else enc
    parts = enc.splits(d.split)
    start = {"train": 0, "val": len(parts["train"]), "test": len(parts["train"]) + len(parts["val"])}[split]
    if tokens is not None:
        # The split's own text, tokenised by itself (as training did); the context is the
        # characters before it, tokenised separately.
        ids = tokens.encode(enc.vocab.decode(parts[split]))
        if context:
            before = tokens.encode(enc.vocab.decode(enc.ids[max(0, start - context) : start]))
        return Text(ids, f"the {split} split of {d.text}", before)
    if context:
        before = np.asarray(enc.ids[max(0, start - context) : start]).astype(np.int64)
    return Text(np.asarray(parts[split]), f"the {split} split of {d.text}", before)


def string_ids(loaded, text: str, what: str = "the text") -> np.ndarray:
    """A string in the model's vocabulary, read as ``model_text`` reads a UTF-8 file holding it:
    a documents run's documents framed as training framed them, in the text's order, after an end
    symbol, so that every character is scored, each document's first one included (a labelled
    run's each with its label); a token model's text tokenised by its tokenizer; unknown
    characters are an error."""
    d = loaded.config.data
    if d.documents:
        docs = split_documents(text, d.documents)
        if loaded.config.model.labels:
            return _labelled_file(loaded, docs, what)
        return np.asarray(loaded.vocab.encode(END + framed(docs)))
    return np.asarray(loaded.vocab.encode(text))


def _labelled_file(loaded, docs: list[str], what: str) -> np.ndarray:
    """A file's documents for a labelled run, each with the label --label finds in it (the
    documents without one, or with a label the run does not know, are refused)."""
    d, names = loaded.config.data, loaded.meta.get("labels") or []
    if not d.label:
        raise CharnnError(
            f"this run's labels came from --labels {d.labels_file}, so the documents of {what} have "
            f"none; score them under each label with charnn attribute"
        )
    if not docs:
        raise CharnnError(f"{what} holds no document (this run cuts documents by --documents {d.documents!r})")
    found = doc_labels(docs, d.label, training=False)
    unknown = sorted({lab for lab in found if lab is not None and lab not in names})
    if unknown or None in found:
        n = found.count(None)
        wrong = [f"{n} of its {len(docs)} documents have no label (the run's --label {d.label!r} finds none)"] if n else []
        if unknown:
            wrong.append(f"labels the run does not know: {', '.join(map(repr, unknown[:5]))}{' ...' * (len(unknown) > 5)}")
        raise CharnnError(f"{what}: {'; '.join(wrong)}; charnn attribute scores documents under each of the run's labels")
    parts = [labelled_ids(loaded.vocab, unlabelled(doc, d.label), names.index(lab)) for doc, lab in zip(docs, found)]
    # each end symbol carries the label of the document after it, as in training
    return np.concatenate([p[:-1] for p in parts] + [parts[-1][-1:]])


@dataclass
class Score:
    loss: float  # mean cross-entropy per scored unit: nats per character (per token for a token model)
    chars: int  # characters scored (the characters the scored tokens hold, for a token model)
    tokens: int | None = None  # tokens scored, for a token model
    mixture: dict | None = None  # a --ngram-mix run's best checkpoint: its mixture's loss (``Mixture.report``)

    @property
    def loss_per_char(self) -> float:
        """Nats per character: the total over the text divided by its character count, the one
        number on which a character model and a token model compare honestly."""
        return self.loss if self.tokens is None else self.loss * self.tokens / max(self.chars, 1)

    @property
    def bpc(self) -> float:
        return self.loss_per_char / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"loss": self.loss, "bpc": self.bpc, "perplexity": self.perplexity, "chars": self.chars}
        if self.tokens is not None:
            d.update(tokens=self.tokens, loss_per_char=self.loss_per_char)
        if self.mixture is not None:
            d["mixture"] = self.mixture
        return d


@torch.no_grad()
def evaluate(
    model: Model,
    ids: np.ndarray,
    streams: int | None = None,
    seq_len: int = 256,
    max_chars: int = 0,
    char_counts: np.ndarray | None = None,
) -> Score:
    """Score every character of ids (but the first) given the ones before it.

    ids: (N,) array of ids. `max_chars` > 0 scores only the first max_chars + 1 units.
    char_counts: (V,) characters per id, for a token model (``TokenVocab.char_counts``): the
    score then counts tokens and the characters they hold.
    The split is read as `streams` parallel pieces (by default as many as suit the model's
    device), each with a warm-up context (see ``data.eval_windows``); the state starts from zero.
    The sum stays on the device: one read-back at the end, not one per window.
    """
    if max_chars and len(ids) > max_chars + 1:
        ids = ids[: max_chars + 1]
    _needs_eval_mode(model)
    device = model.head.weight.device
    total = torch.zeros((), dtype=wide_float(device.type), device=device)
    count, chars = 0, 0.0
    state = None
    for x, y in eval_windows(ids, streams or eval_streams(device.type), seq_len, _warmup(model)):
        yn = y.numpy()
        scored = yn[yn >= 0]  # counted on the host, before y moves
        count += len(scored)
        if char_counts is not None:
            chars += float(char_counts[scored].sum())
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits, state = model(x, state)
        total += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), targets(model.cfg, y).reshape(-1), ignore_index=-1, reduction="sum"
        )
    if char_counts is None:
        return Score(float(total) / max(count, 1), count)
    return Score(float(total) / max(count, 1), int(round(chars)), count)


@torch.no_grad()
def evaluate_rows(model: Model, rows: list[np.ndarray], seq_len: int = 256) -> list[Score]:
    """``evaluate(model, row, streams=1)`` for each of several id sequences of one length, read
    side by side as one batch: attribution scores a document under every label at once, for about
    the cost of one (a small model's step costs nearly the same at batch 1 and at batch K)."""
    if len({len(r) for r in rows}) > 1:
        raise ValueError("evaluate_rows needs sequences of one length")
    _needs_eval_mode(model)
    device = model.head.weight.device
    total = torch.zeros(len(rows), dtype=wide_float(device.type), device=device)
    count, state = 0, None
    for windows in zip(*(eval_windows(r, 1, seq_len, _warmup(model)) for r in rows)):
        x, y = torch.cat([w[0] for w in windows]), torch.cat([w[1] for w in windows])  # (K, T)
        count += int((y[0] >= 0).sum())  # the same positions are scored in every row
        logits, state = model(x.to(device), state)
        losses = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            targets(model.cfg, y.to(device)).reshape(-1),
            ignore_index=-1,
            reduction="none",
        )
        total += losses.view(len(rows), -1).sum(1)
    return [Score(t / max(count, 1), count) for t in total.tolist()]


def score_text(model: Model, vocab, ids: np.ndarray, **kw) -> Score:
    """``evaluate`` with the vocabulary's character counts when its units are tokens."""
    return evaluate(model, ids, char_counts=vocab.char_counts() if isinstance(vocab, TokenVocab) else None, **kw)


@torch.no_grad()
def char_losses(model: Model, ids: np.ndarray, streams: int | None = None, seq_len: int = 256, adjust=None) -> np.ndarray:
    """(N,) loss in nats of predicting ids[t + 1] after ids[..t], read as ``evaluate`` reads it;
    NaN at the last position (nothing follows it). The losses are read back once, at the end.
    adjust(logits (S, T, V), pos (S, T) input positions, scored (S, T) bool) -> log-probabilities
    to score instead of the model's own (the n-gram mixture's, ``study.mixture``)."""
    _needs_eval_mode(model)
    device = model.head.weight.device
    nll = np.full(len(ids), np.nan)
    where, losses = [], []
    state = None
    for x, y, pos in eval_windows(ids, streams or eval_streams(device.type), seq_len, _warmup(model), positions=True):
        logits, state = model(x.to(device), state)
        if adjust is not None:
            logits = adjust(logits.float(), pos, (y >= 0).numpy())
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            targets(model.cfg, y.to(device)).reshape(-1),
            ignore_index=-1,
            reduction="none",
        ).view(y.shape)
        scored = (y >= 0).numpy()
        where.append((pos[scored], scored))
        losses.append(loss)
    for (at, scored), loss in zip(where, torch.stack(losses).cpu().numpy() if losses else []):
        nll[at] = loss[scored]
    return nll


def _warmup(model) -> int:
    """Characters each stream reads before it scores: 100, or a transformer's whole block, so that
    the first scored characters have all the context the block allows."""
    return max(100, model.cfg.block)


def _needs_eval_mode(model: torch.nn.Module) -> None:
    if model.training:
        raise ValueError(
            "scoring needs the model in eval mode (dropout off): call model.eval() first, "
            "or load it with Checkpoint.build_model()"
        )
