"""Interpretable-cell search: rank every cell by its correlation with each feature of a text."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from charnn.inspect import features as feats
from charnn.inspect.activations import QUANTITIES, record, streams_for
from charnn.subject import Subject


@dataclass
class Ranked:
    layer: int
    cell: int
    quantity: str
    r: float  # Pearson correlation with the feature over the text


@dataclass
class FeatureResult:
    name: str
    about: str
    on_fraction: float  # binary: share of characters where it is on; else share non-zero
    top: list[Ranked] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict:
        return {
            "feature": self.name,
            "about": self.about,
            "on_fraction": self.on_fraction,
            "note": self.note,
            "top": [vars(r) for r in self.top],
        }


def search_quantities(cell: str) -> tuple[str, ...]:
    """The paper looks at LSTM cell states (tanh c); h is what every recurrent cell has; a
    transformer offers its MLP neurons (``ModelConfig.units`` says why)."""
    return ("c", "h") if cell == "lstm" else QUANTITIES[cell][:1]


@torch.no_grad()
def find_cells(subject: Subject, user_features=(), top: int = 5, quantities=None, streams: int = 16) -> list[FeatureResult]:
    """For every feature, the `top` cells with the largest |correlation|, best first.

    Accumulates sums over the text chunk by chunk (float64), so the text can be long.
    """
    model = subject.model
    fl = feats.compute(subject.text, user_features, subject.context)
    F = torch.from_numpy(np.stack([f.values for f in fl], axis=1)).double()  # (N, M)
    qs = tuple(quantities or search_quantities(model.cfg.cell))
    L, H = model.cfg.layers, model.cfg.units
    K = len(qs) * L * H
    sx = torch.zeros(K, dtype=torch.float64)
    sxx = torch.zeros(K, dtype=torch.float64)
    sxf = torch.zeros(K, F.shape[1], dtype=torch.float64)
    sf = torch.zeros(F.shape[1], dtype=torch.float64)
    sff = torch.zeros(F.shape[1], dtype=torch.float64)
    n = 0
    streams = streams_for(len(subject.ids), streams)
    for ch in record(model, subject.ids, qs, streams=streams, chunk=1024):
        X = torch.cat([ch.acts[q].permute(1, 0, 2).reshape(len(ch.positions), L * H) for q in qs], dim=1).double()
        fx = F[torch.from_numpy(ch.positions)]
        sx += X.sum(0)
        sxx += (X * X).sum(0)
        sxf += X.T @ fx
        sf += fx.sum(0)
        sff += (fx * fx).sum(0)
        n += len(ch.positions)
    cov = sxf / n - (sx / n)[:, None] * (sf / n)[None, :]
    vx = (sxx / n - (sx / n) ** 2).clamp_min(0)
    vf = (sff / n - (sf / n) ** 2).clamp_min(0)
    denom = torch.sqrt(vx[:, None] * vf[None, :])
    r = torch.where(denom > 1e-12, cov / denom.clamp_min(1e-300), torch.zeros_like(cov))  # (K, M)
    out = []
    for m, f in enumerate(fl):
        on = float((f.values > 0).mean())
        res = FeatureResult(f.name, f.about, on)
        if vf[m] <= 1e-12:
            res.note = "constant over this text: nothing to correlate with"
            out.append(res)
            continue
        order = torch.argsort(r[:, m].abs(), descending=True)[:top]
        for k in order.tolist():
            q, rest = divmod(k, L * H)
            layer, cell = divmod(rest, H)
            res.top.append(Ranked(layer, cell, qs[q], float(r[k, m])))
        out.append(res)
    return out


def snippet_window(values: np.ndarray, width: int = 100) -> tuple[int, int]:
    """A window of the text where a feature changes most often: the picture worth showing."""
    n = len(values)
    if n <= width:
        return 0, n
    changes = np.abs(np.diff(values, prepend=values[0])) > 0
    c = np.concatenate([[0], np.cumsum(changes)])
    counts = c[width:] - c[:-width]
    start = int(np.argmax(counts))
    return start, start + width
