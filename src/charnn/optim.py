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
"""

from __future__ import annotations

import torch
from torch import nn


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
    numbers follow the first's)."""

    def __init__(
        self,
        matrices: list[nn.Parameter],
        rest: list[nn.Parameter],
        lr: float,
        weight_decay: float,
        fused: bool | None = None,
        ns_steps: int = 5,
    ):
        self.parts = (
            torch.optim.Muon(matrices, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw", ns_steps=ns_steps),
            torch.optim.AdamW(rest, lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay, fused=fused),
        )

    @property
    def param_groups(self) -> list[dict]:
        return [g for part in self.parts for g in part.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for part in self.parts:
            part.step()

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
