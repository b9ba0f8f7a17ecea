"""Score a model on text: loss, bits per character and perplexity of a split or any file, and the
loss at every position (for the analyses). The model must be in eval mode (``build_model`` gives
one; the trainer switches its own model around each evaluation): nothing here changes a module,
so one model can serve many callers at once."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from charnn.data import NotUTF8, eval_windows, prepare
from charnn.distributed import eval_streams
from charnn.errors import CharnnError
from charnn.model import CharRNN


@dataclass
class Text:
    """A text in a model's vocabulary: ids (N,), where it came from, and (for a split) up to
    `context` ids of the corpus just before it."""
    ids: np.ndarray
    what: str
    before: np.ndarray


def model_text(loaded, text: str | None = None, split: str | None = None, context: int = 0) -> Text:
    """A file (`text`) or a split of the run's own corpus (default val), encoded as the run was and
    in the model's vocabulary (a character the model never saw is an error naming it).

    loaded: a ``checkpoint.Checkpoint``.
    """
    d = loaded.config.data
    before = np.zeros(0, dtype=np.int64)
    if text is not None:
        try:
            enc = prepare(text, unit=d.unit, encoding_errors=d.encoding_errors).remap(loaded.vocab, text)
        except NotUTF8 as e:  # the model decides how text is read: there is no --encoding-errors to pass here
            raise CharnnError(f"{e.path} is not valid UTF-8 at byte offset {e.offset}; this model reads Unicode "
                              f"characters, so it can only score UTF-8 text (a model trained with --unit bytes "
                              f"scores any file)") from None
        return Text(np.asarray(enc.ids), text, before)
    split = split or "val"
    enc = prepare(d.text, d.include, d.unit, d.encoding_errors, loaded.config.train.seed).remap(loaded.vocab)
    parts = enc.splits(d.split)
    start = {"train": 0, "val": len(parts["train"]), "test": len(parts["train"]) + len(parts["val"])}[split]
    if context:
        before = np.asarray(enc.ids[max(0, start - context):start]).astype(np.int64)
    return Text(np.asarray(parts[split]), f"the {split} split of {d.text}", before)


@dataclass
class Score:
    loss: float  # mean cross-entropy, nats per character
    chars: int  # characters scored

    @property
    def bpc(self) -> float:
        return self.loss / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    def to_dict(self) -> dict:
        return {"loss": self.loss, "bpc": self.bpc, "perplexity": self.perplexity, "chars": self.chars}


@torch.no_grad()
def evaluate(model: CharRNN, ids: np.ndarray, streams: int | None = None, seq_len: int = 256,
             max_chars: int = 0) -> Score:
    """Score every character of ids (but the first) given the ones before it.

    ids: (N,) array of ids. `max_chars` > 0 scores only the first max_chars + 1 characters.
    The split is read as `streams` parallel pieces (by default as many as suit the model's
    device), each with a warm-up context (see ``data.eval_windows``); the state starts from zero.
    The sum stays on the device: one read-back at the end, not one per window.
    """
    if max_chars and len(ids) > max_chars + 1:
        ids = ids[:max_chars + 1]
    _needs_eval_mode(model)
    device = model.head.weight.device
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    state = None
    for x, y in eval_windows(ids, streams or eval_streams(device.type), seq_len):
        count += int(np.count_nonzero(y.numpy() >= 0))  # counted on the host, before y moves
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits, state = model(x, state)
        total += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), ignore_index=-1, reduction="sum")
    return Score(float(total) / max(count, 1), count)


@torch.no_grad()
def char_losses(model: CharRNN, ids: np.ndarray, streams: int | None = None, seq_len: int = 256) -> np.ndarray:
    """(N,) loss in nats of predicting ids[t + 1] after ids[..t], read as ``evaluate`` reads it;
    NaN at the last position (nothing follows it). The losses are read back once, at the end."""
    _needs_eval_mode(model)
    device = model.head.weight.device
    nll = np.full(len(ids), np.nan)
    where, losses = [], []
    state = None
    for x, y, pos in eval_windows(ids, streams or eval_streams(device.type), seq_len, positions=True):
        logits, state = model(x.to(device), state)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.to(device).reshape(-1),
                                                 ignore_index=-1, reduction="none").view(y.shape)
        scored = (y >= 0).numpy()
        where.append((pos[scored], scored))
        losses.append(loss)
    for (at, scored), loss in zip(where, torch.stack(losses).cpu().numpy() if losses else []):
        nll[at] = loss[scored]
    return nll


def _needs_eval_mode(model: torch.nn.Module) -> None:
    if model.training:
        raise ValueError("scoring needs the model in eval mode (dropout off): call model.eval() first, "
                         "or load it with Checkpoint.build_model()")
