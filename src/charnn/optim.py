"""Muon for the hidden matrices, AdamW for the rest, behind one optimiser's interface.

Muon (Jordan et al. 2024; torch.optim.Muon) replaces each update of a weight matrix by the
nearest semi-orthogonal matrix to its momentum (five Newton-Schulz iterations; fewer with
--muon-ns-steps, three in the default preset), so every direction of the matrix learns at the
same rate. It is meant for the matrices a hidden layer
multiplies by; embeddings, the read-out, biases and norms keep AdamW. With Moonshot's
"match_rms_adamw" scaling (Liu et al. 2025) its updates have AdamW's size, so one learning rate,
one schedule and one weight decay serve both parts.

PyTorch has no optimiser that runs two algorithms over one model; the trainer needs one object
(learning rate per group, step, state saved as tensors), hence this small composite.

Per gate (--muon-gates, the default preset's): a recurrent layer's weight matrix is its gates'
matrices stacked (an LSTM's four, a GRU's three), as a transformer's fused QKV is three matrices.
Muon over the stack makes the update orthogonal as one matrix, so a gate whose gradient is small
gets the same share as the others only across the whole stack; per gate, each gate's block is
orthogonalised on its own, as if it were its own parameter (with Moonshot's scaling for its own
shape). torch.optim.Muon takes whole parameters, and nn.LSTM's fused kernel needs the stacked
one, so each stacked matrix is mirrored by one parameter per gate that torch's Muon steps: the
weights and gradients are copied in before the step and the weights back after (a few MB per
step). Measured on the default preset at a fixed 1,200 steps: 0.008-0.011 nats lower than over the
stack, on two seeds (docs/notes.md).
"""

from __future__ import annotations

import torch
from torch import nn


def gate_blocks(model: nn.Module, matrices: list[nn.Parameter]) -> list[int]:
    """How many gates' matrices each of `matrices` stacks: an LSTM's recurrent weights 4, a GRU's
    3, everything else 1 (a plain RNN's, a transformer's)."""
    rnn = getattr(model, "rnn", None)
    gates = 4 if isinstance(rnn, nn.LSTM) else 3 if isinstance(rnn, nn.GRU) else 1
    own = {id(p) for p in rnn.parameters()} if rnn is not None else set()
    return [gates if id(p) in own and p.shape[0] % gates == 0 else 1 for p in matrices]


def hidden_matrices(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(the matrices a hidden layer multiplies by, everything else): 2-D weights that are not an
    embedding's table and not the read-out (`head`)."""
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    matrices: list[nn.Parameter] = []
    rest: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        hidden = p.dim() == 2 and id(p) not in tables and not name.startswith("head.")
        (matrices if hidden else rest).append(p)
    return matrices, rest


class MuonAdamW:
    """torch.optim.Muon over `matrices` and AdamW over `rest`, stepped together; `param_groups`,
    `state_dict` and `load_state_dict` read as one optimiser's (the second part's parameter
    numbers follow the first's). blocks: for each matrix, how many stacked gates' matrices Muon
    orthogonalises one by one (1: the whole matrix; see the module's docstring)."""

    def __init__(
        self,
        matrices: list[nn.Parameter],
        rest: list[nn.Parameter],
        lr: float,
        weight_decay: float,
        fused: bool | None = None,
        ns_steps: int = 5,
        blocks: list[int] | None = None,
    ):
        self.split: list[tuple[nn.Parameter, list[nn.Parameter]]] = []  # a stacked matrix, its gates' mirrors
        stepped: list[nn.Parameter] = []  # what Muon steps: whole matrices, and the gates' mirrors
        for p, k in zip(matrices, blocks or [1] * len(matrices)):
            if k > 1:
                mirrors = [nn.Parameter(piece.detach().clone()) for piece in p.chunk(k)]
                self.split.append((p, mirrors))
                stepped += mirrors
            else:
                stepped.append(p)
        self.parts = (
            torch.optim.Muon(stepped, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw", ns_steps=ns_steps),
            torch.optim.AdamW(rest, lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay, fused=fused),
        )

    @property
    def param_groups(self) -> list[dict]:
        return [g for part in self.parts for g in part.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)
        for p, _ in self.split:
            p.grad = None

    def step(self) -> None:
        with torch.no_grad():
            for p, mirrors in self.split:  # each gate's block in, as its own parameter
                grads = p.grad.chunk(len(mirrors)) if p.grad is not None else [None] * len(mirrors)
                for m, w, g in zip(mirrors, p.chunk(len(mirrors)), grads):
                    m.copy_(w)
                    m.grad = g  # a view: Muon reads the gradient and never writes it
        for part in self.parts:
            part.step()
        with torch.no_grad():
            for p, mirrors in self.split:  # and the stepped blocks back into the stacked matrix
                for m, w in zip(mirrors, p.chunk(len(mirrors))):
                    w.copy_(m)

    def _offset(self) -> int:
        return sum(len(g["params"]) for g in self.parts[0].param_groups)

    def state_dict(self) -> dict:
        first, second = (part.state_dict() for part in self.parts)
        n = self._offset()
        state = dict(first["state"]) | {i + n: s for i, s in second["state"].items()}
        groups = first["param_groups"] + [dict(g, params=[i + n for i in g["params"]]) for g in second["param_groups"]]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict) -> None:
        n, k = self._offset(), len(self.parts[0].param_groups)
        groups = sd["param_groups"]
        self.parts[0].load_state_dict({"state": {i: s for i, s in sd["state"].items() if int(i) < n}, "param_groups": groups[:k]})
        self.parts[1].load_state_dict(
            {
                "state": {int(i) - n: s for i, s in sd["state"].items() if int(i) >= n},
                "param_groups": [dict(g, params=[i - n for i in g["params"]]) for g in groups[k:]],
            }
        )
