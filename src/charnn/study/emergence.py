"""When interpretable cells emerge: for every kept checkpoint and every feature, (a) the best single
cell's |correlation| with it (what `inspect find` reports) and (b) how well a linear probe on a
layer's whole state (h and, for an LSTM, c) recovers it. A probe that knows a feature long before
any single cell shows it answers the blog reader's question ("does it discover the structure
early, but not yet express it?") with numbers.

The probe is fitted on one half of the text and scored on the other, the halves interleaved in
blocks of BLOCK characters so that a feature tied to a part of the text (a chapter) appears in
both: balanced accuracy for on/off and labelled features (the mean over classes of the share
recognised: chance is 1 / classes however rare a feature is), R^2 for counts (depths, line position).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from charnn import checkpoint as ckpt
from charnn.errors import CharnnError
from charnn.evaluate import model_text
from charnn.files import refuse_foreign, write_atomic
from charnn.inspect import features as feats
from charnn.inspect.activations import held, record_all
from charnn.inspect.find import find_cells
from charnn.subject import Subject, display_chars, require_characters

BLOCK = 500  # characters per block of the interleaved halves
CELL_R = 0.5  # a single cell "shows" a feature from this |correlation| on
CONTEXT = 2000  # characters of the corpus before the text, read first


@dataclass
class EmergenceReport:
    what: str
    chars: int
    features: dict[str, str] = field(default_factory=dict)  # name -> about
    checkpoints: list[dict] = field(default_factory=list)  # {"step", "features": {name: {best_cell_r, probe_score, ...}}}

    def to_dict(self) -> dict:
        clean = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v  # noqa: E731
        return {
            "text": self.what,
            "chars": self.chars,
            "checkpoints": [
                {"step": c["step"], "features": {n: {k: clean(v) for k, v in f.items()} for n, f in c["features"].items()}}
                for c in self.checkpoints
            ],
        }

    def first_steps(self, name: str) -> tuple[int | None, int | None]:
        """(first step where the probe is halfway from chance to perfect, first step where a single
        cell's |r| reaches CELL_R) for a feature."""
        probe = cell = None
        for c in self.checkpoints:
            f = c["features"][name]
            base, score = f["probe_baseline"], f["probe_score"]
            if probe is None and math.isfinite(score) and score >= base + (1 - base) / 2:
                probe = c["step"]
            if cell is None and math.isfinite(f["best_cell_r"]) and f["best_cell_r"] >= CELL_R:
                cell = c["step"]
        return probe, cell


def _halves(n: int) -> np.ndarray:
    """True for the fitting half: even-numbered blocks of BLOCK characters."""
    return (np.arange(n) // BLOCK) % 2 == 0


def probe_score(x: torch.Tensor, y: np.ndarray, kind: str, fit: np.ndarray) -> float:
    """x (N, D) states, y (N,) a feature; kind "binary", "labels" or "count". A linear read-out
    fitted on x[fit] and scored on the rest: accuracy (binary, labels) or R^2 (count).

    Logistic regression is a linear layer trained by L-BFGS on standardised inputs with a little
    weight decay: PyTorch already does this well, so no other library is needed."""
    x = x.double()
    # A floor on the spread: a cell saturated in the fitting half would otherwise be scaled up
    # without bound and swamp the read-out wherever it moves in the other half.
    mu, sd = x[fit].mean(0), x[fit].std(0).clamp_min(0.05)
    z = (x - mu) / sd
    test = ~fit
    if kind == "count":
        zf = torch.cat([z[fit], torch.ones(int(fit.sum()), 1, dtype=z.dtype)], 1)
        yf = torch.as_tensor(y[fit], dtype=torch.float64)
        ridge = 0.1 * len(zf) * torch.eye(zf.shape[1], dtype=z.dtype)
        ridge[-1, -1] = 0  # the intercept is not shrunk
        w = torch.linalg.solve(zf.T @ zf + ridge, zf.T @ yf)
        zt = torch.cat([z[test], torch.ones(int(test.sum()), 1, dtype=z.dtype)], 1)
        yt = torch.as_tensor(y[test], dtype=torch.float64)
        resid = ((zt @ w - yt) ** 2).sum()
        total = ((yt - yt.mean()) ** 2).sum()
        return float(1 - resid / total) if total > 0 else float("nan")
    classes = np.unique(y[fit])
    if len(classes) < 2:
        return float("nan")
    yi = torch.as_tensor(np.searchsorted(classes, y).clip(0, len(classes) - 1), dtype=torch.long)
    seen = torch.as_tensor(np.isin(y, classes))
    lin = torch.nn.Linear(z.shape[1], len(classes)).double()
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=200, line_search_fn="strong_wolfe")
    zf, yf = z[fit], yi[fit]
    weight = 1.0 / torch.bincount(yf, minlength=len(classes)).double()  # every class counts alike

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(zf), yf, weight=weight) + 1e-4 * (lin.weight**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    t = torch.as_tensor(test) & seen
    if not t.any():
        return float("nan")
    with torch.no_grad():
        right = lin(z[t]).argmax(1) == yi[t]
    # balanced accuracy: the mean over classes of the share recognised, so that always answering
    # the common class (a feature that is rarely on) scores 1 / classes, not its frequency
    recalls = [float(right[yi[t] == c].double().mean()) for c in range(len(classes)) if (yi[t] == c).any()]
    return float(np.mean(recalls))


def _chance(y: np.ndarray, kind: str, fit: np.ndarray) -> float:
    """What the probe scores knowing nothing: 1 / classes (balanced accuracy), or 0 (R^2)."""
    if kind == "count":
        return 0.0
    return 1.0 / max(1, len(np.unique(y[fit])))


def emergence(
    run, split: str = "val", chars: int = 20_000, user_features=(), feature_file=None, progress=None, parts: str | None = None
) -> EmergenceReport:
    steps, last = ckpt.kept_for_analysis(run)
    say = progress or (lambda _msg: None)
    require_characters(last, "charnn analyze emergence")
    source = model_text(last, split=split, context=CONTEXT)
    ids = np.asarray(source.ids[:chars] if chars else source.ids, dtype=np.int64)
    if len(ids) < 4 * BLOCK:
        raise CharnnError(f"{source.what} holds {len(ids)} characters; the probe needs at least {4 * BLOCK}")
    table = np.array(display_chars(last.vocab), dtype=object)
    text, context = "".join(table[ids]), "".join(table[np.asarray(source.before, dtype=np.int64)])
    fl = feats.compute(text, user_features, context)
    ys = {f.name: (f.values, "binary" if f.binary else "count") for f in fl if np.ptp(f.values) > 0}
    rep = EmergenceReport(source.what, len(ids), {f.name: f.about for f in fl if f.name in ys})
    if feature_file:
        ys["file"] = (feats.read_feature_file(feature_file, len(ids)), "labels")
        rep.features["file"] = f"the labels of {feature_file} (which part of the text)"
    if parts:
        y = feats.part_labels(text, parts)
        if len(np.unique(y[_halves(len(ids))])) < 2:
            raise CharnnError(
                f"--parts {parts!r} starts {int(y[-1])} new part(s) in the {len(ids):,} characters "
                f"read; the probe needs at least two parts: read more (--chars) or match more often"
            )
        ys["part"] = (y, "labels")
        rep.features["part"] = f"which part of the text (each match of {parts!r} starts one)"
    fit = _halves(len(ids))
    for step in steps:
        say(f"checkpoint at step {step}")
        loaded = ckpt.load(run, f"step:{step}")
        model = loaded.build_model()
        subject = Subject(model, loaded.vocab, loaded, ids, text, source.what, context, source.before)
        best = {r.name: (abs(r.top[0].r) if r.top else 0.0) for r in find_cells(subject, user_features, top=1)}
        qs = held(model.cfg.cell)
        acts = record_all(model, np.concatenate([source.before, ids]), qs).acts  # warm up on the context first
        n0 = len(source.before)
        features: dict[str, dict] = {}
        row = {"step": step, "val_loss": loaded.meta.get("val_loss"), "features": features}
        for name, (y, kind) in ys.items():
            scores = [
                probe_score(torch.cat([acts[q][layer, n0:] for q in qs], 1), y, kind, fit) for layer in range(model.cfg.layers)
            ]
            k = int(np.nanargmax(scores)) if not all(math.isnan(s) for s in scores) else 0
            features[name] = {
                "best_cell_r": best.get(name, float("nan")),
                "probe_score": scores[k],
                "probe_layer": k,
                "probe_kind": kind,
                "probe_baseline": _chance(y, kind, fit),
            }
        rep.checkpoints.append(row)
    return rep


def check_out(out) -> None:
    """--out must be a folder whose emergence.json, if any, charnn wrote."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CharnnError(f"{out} is a file; --out takes a folder for emergence.json")
    refuse_foreign(out / "emergence.json", b'"checkpoints"')


def write(rep: EmergenceReport, out) -> Path:
    """`out/emergence.json`, never over a file charnn did not write."""
    out = Path(out)
    check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "emergence.json", json.dumps(rep.to_dict(), indent=1) + "\n")
    return out / "emergence.json"
