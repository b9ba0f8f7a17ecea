"""One character at a time, fast: the sampling path for small batches.

Calling ``nn.LSTM`` once per character spends most of its time outside the arithmetic (argument
checks, weight-layout handling, allocating a (B, 1, H) sequence). Here each layer is one fused
cell op (``torch.lstm_cell`` / ``gru_cell`` / ``rnn_tanh_cell``, the ATen kernels nn.LSTMCell
uses) on preallocated state, so that at batch 1 the time goes into reading the weights, which is
the bound (each weight is read once per character). Same weights, same function as
``CharRNN.forward`` in eval mode; tests check that samples are identical.

A transformer steps on its key/value cache (``charnn.transformer.CacheStepper``), allocated once
at the block's length. ``make_stepper`` picks the one a model's configuration calls for.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from charnn.model import CharRNN, Model, State, cell_step
from charnn.transformer import CacheStepper

_CELL_OPS: dict[str, Callable[..., Any]] = {"lstm": torch.lstm_cell, "gru": torch.gru_cell, "rnn": torch.rnn_tanh_cell}


class Stepper:
    """step(ids (B,)) -> logits (B, V), carrying the state between calls."""

    def __init__(self, model: CharRNN, state: State, clamped: dict | None = None):
        """clamped: layer -> (cells (K,), values (K,)) held at every step (``sample.parse_clamp``):
        an LSTM's cell state c, or a GRU's / RNN's hidden state. A clamped layer runs the cell
        equations of ``model.cell_step`` instead of the fused op."""
        self.model = model
        self.clamped = clamped or {}
        self.cell = model.cfg.cell
        self.op = _CELL_OPS[self.cell]
        rnn = model.rnn
        self.weights = [
            tuple(getattr(rnn, f"{n}_l{k}").detach() for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            for k in range(model.cfg.layers)
        ]
        self.embed = model.embed.weight.detach()
        self.labels = model.label_embed.weight.detach() if model.cfg.labels else None  # (see model.inputs)
        self.head_w = model.head.weight.detach()
        self.head_b = model.head.bias.detach()
        self.c: list[torch.Tensor] | None = None
        if self.cell == "lstm":
            h, c = state  # (h, c)
            self.h = list(h.unbind(0))  # L x (B, H)
            self.c = list(c.unbind(0))
        else:
            assert isinstance(state, torch.Tensor), "a GRU's or an RNN's state is one tensor"
            self.h = list(state.unbind(0))

    @torch.no_grad()
    def step(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed[ids] if self.labels is None else self.embed[ids % len(self.embed)] + self.labels[ids // len(self.embed)]
        for k, w in enumerate(self.weights):
            if k in self.clamped:
                self._clamped_step(k, x, w)
            elif self.c is not None:
                self.h[k], self.c[k] = self.op(x, (self.h[k], self.c[k]), *w)
            else:
                self.h[k] = self.op(x, self.h[k], *w)
            x = self.h[k]
        return torch.addmm(self.head_b, x, self.head_w.T)  # (B, V)

    def _clamped_step(self, k: int, x: torch.Tensor, w) -> None:
        cells, values = self.clamped[k]
        held = "c" if self.c is not None else "h"

        def clamp(name, v):
            if name != held:
                return v
            v = v.clone()
            v[:, cells] = values
            return v

        c = self.c[k] if self.c is not None else None
        self.h[k], c, _ = cell_step(self.cell, x @ w[0].T + w[2], self.h[k], c, w[1], w[3], clamp)
        if self.c is not None:
            self.c[k] = c

    def state(self) -> State:
        h = torch.stack(self.h)
        return (h, torch.stack(self.c)) if self.c is not None else h


def make_stepper(model: Model, state, clamped: dict | None = None):
    """The fast one-character-at-a-time path for this model, going on from `state`."""
    if isinstance(model, CharRNN):
        return Stepper(model, state, clamped)
    return CacheStepper(model, state, clamped)
