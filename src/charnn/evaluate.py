"""Loss, bits per character and perplexity of a model on a split or any text."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from charnn.data import eval_windows
from charnn.model import CharRNN


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
def evaluate(model: CharRNN, ids: np.ndarray, streams: int = 64, seq_len: int = 256,
             max_chars: int = 0) -> Score:
    """Score every character of ids (but the first) given the ones before it.

    ids: (N,) array of ids. `max_chars` > 0 scores only the first max_chars + 1 characters.
    The split is read as `streams` parallel pieces, each with a warm-up context (see
    ``data.eval_windows``); the hidden state starts from zero.
    """
    if max_chars and len(ids) > max_chars + 1:
        ids = ids[:max_chars + 1]
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    total, count = 0.0, 0
    state = None
    for x, y in eval_windows(ids, streams, seq_len):
        x, y = x.to(device), y.to(device)
        logits, state = model(x, state)
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), ignore_index=-1, reduction="sum")
        total += nll.item()
        count += int((y >= 0).sum())
    model.train(was_training)
    return Score(total / max(count, 1), count)
