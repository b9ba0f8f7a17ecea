"""Ablation, the causal test: silence chosen cells while the model reads, and see what breaks.

A cell that merely correlates with quotes changes nothing when silenced; a cell the model uses
to know it is inside quotes raises the loss there. We report the change in loss overall and,
for each binary feature, on the characters where it is on versus off.

Silencing holds the cell's hidden state h (and, for an LSTM, its cell state c) at zero, or at
its mean over the same text, at every step; the layers above and the next step see that value.
A transformer's units are its MLP neurons (held the same way, after their GELU), and its
attention heads can be silenced whole: a muted head's output is zero at every position.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from charnn.errors import CharnnError
from charnn.inspect import features as feats
from charnn.inspect.activations import Clamp, held, record, streams_for
from charnn.sample import check_clamp_value
from charnn.subject import Subject


def parse_cells(spec: str, layers: int, hidden: int, flag: str = "--cells", unit: str = "cells") -> list[tuple[int, int]]:
    """'0:12,1:40' -> [(0, 12), (1, 40)], checked against the model's shape (`hidden` units a layer)."""
    out = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+):(\d+)\s*", part)
        if not m:
            raise CharnnError(f"{flag} {spec!r}: expected LAYER:INDEX[,LAYER:INDEX...], e.g. 0:12,1:40")
        layer, cell = int(m[1]), int(m[2])
        if layer >= layers or cell >= hidden:
            raise CharnnError(
                f"{flag} {part.strip()}: this model has layers 0..{layers - 1} and {unit} 0..{hidden - 1} per layer"
            )
        if (layer, cell) not in out:
            out.append((layer, cell))
    return out


@dataclass
class Split:
    chars: int
    base: float  # mean loss in nats per character, unablated
    ablated: float

    @property
    def delta(self) -> float:
        return self.ablated - self.base

    def to_dict(self) -> dict:
        return {"chars": self.chars, "base": self.base, "ablated": self.ablated, "delta": self.delta}


@dataclass
class Report:
    cells: list[tuple[int, int]]
    mode: str
    overall: Split
    features: dict[str, tuple[str, Split, Split]] = field(default_factory=dict)  # name -> (about, on, off)
    heads: list[tuple[int, int]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "cells": [f"{a}:{b}" for a, b in self.cells],
            "heads": [f"{a}:{b}" for a, b in self.heads],
            "mode": self.mode,
            "overall": self.overall.to_dict(),
            "features": {k: {"about": a, "on": on.to_dict(), "off": off.to_dict()} for k, (a, on, off) in self.features.items()},
        }


def char_losses(model, ids, streams: int = 16, **kw) -> tuple[np.ndarray, dict]:
    """Per-position loss of predicting ids[t+1] after ids[..t] (NaN at the end), and per-cell means.
    (A labelled run's ids are unit + V * label: the unit is what is predicted.)

    Long texts are read as `streams` parallel pieces (see activations.streams_for).
    """
    n = len(ids)
    streams = streams_for(n, streams)
    nll = np.full(n, np.nan)
    sums: dict[str, torch.Tensor] = {}
    target = torch.from_numpy(np.append(np.asarray(ids[1:], dtype=np.int64) % model.cfg.vocab_size, 0))
    for ch in record(model, ids, streams=streams, chunk=1024, **kw):
        pos = torch.from_numpy(ch.positions)
        lp = ch.logp.gather(1, target[pos][:, None])[:, 0].double()
        nll[ch.positions] = -lp.numpy()
        for q, v in ch.acts.items():
            sums[q] = sums.get(q, 0) + v.double().sum(1)  # (L, H)
    nll[n - 1] = np.nan
    return nll, {q: (s / n).float() for q, s in sums.items()}


def _value_of(mode: str, cell: str) -> float | None:
    """--mode: zero, mean, or value:V (V on the pages' scale: an LSTM's tanh(c), a GRU's or RNN's
    h, a transformer's MLP neuron)."""
    if mode in ("zero", "mean"):
        return None
    try:
        if not mode.startswith("value:"):
            raise ValueError
        v = float(mode[6:])
    except ValueError:
        raise CharnnError(f"--mode {mode!r}: use zero, mean or value:V (for example value:0.9)") from None
    check_clamp_value(f"--mode {mode}", v, cell)
    return v


@torch.no_grad()
def ablate(
    subject: Subject,
    cells: list[tuple[int, int]],
    mode: str = "zero",
    user_features=(),
    streams: int = 16,
    heads: Sequence[tuple[int, int]] = (),
) -> Report:
    """Silence `cells` (held as `mode` says) and a transformer's `heads` (zeroed) together, and
    report the change in loss overall and where each binary feature is on / off."""
    model = subject.model
    value = _value_of(mode, model.cfg.cell)
    if heads and mode != "zero":
        raise CharnnError(
            f"--heads are silenced by zeroing their output; --mode {mode} applies to --cells only, "
            "so give the heads alone with --mode zero"
        )
    qs = held(model.cfg.cell)
    base, means = char_losses(model, subject.ids, streams, quantities=qs)
    mute = {layer: torch.tensor([h for a, h in heads if a == layer]) for layer in {a for a, _ in heads}}
    clamps = {}
    for layer in sorted({a for a, _ in cells}):
        idx = torch.tensor([c for a, c in cells if a == layer])
        if value is not None:  # as charnn sample --clamp: an LSTM's c held at atanh(V) (h follows), else h at V
            v = torch.full((len(idx),), value)
            clamps.update(Clamp.from_clamped({layer: (idx, torch.atanh(v) if model.cfg.cell == "lstm" else v)}, model.cfg.cell))
            continue
        if mode == "zero":
            hv = cv = torch.zeros(len(idx))
        else:  # means["c"] is the mean of tanh(c); the clamp holds c itself at atanh of it
            hv = means[qs[0]][layer, idx]
            cv = torch.atanh(means["c"][layer, idx].clamp(-0.999999, 0.999999)) if "c" in means else hv
        clamps[layer] = Clamp(idx, hv, cv)
    abl, _ = char_losses(model, subject.ids, streams, quantities=qs[:1], clamps=clamps, mute=mute)
    scored = ~np.isnan(base)

    def split(mask: np.ndarray) -> Split:
        m = mask & scored
        k = int(m.sum())
        return Split(k, float(base[m].mean()) if k else float("nan"), float(abl[m].mean()) if k else float("nan"))

    rep = Report(cells, mode, split(np.ones(len(base), dtype=bool)), heads=list(heads))
    for f in feats.compute(subject.text, user_features, subject.context):
        if not f.binary:
            continue
        on = f.values > 0
        if not on[scored].any() or on[scored].all():
            continue  # never or always on: no contrast to report
        rep.features[f.name] = (f.about, split(on), split(~on))
    return rep
