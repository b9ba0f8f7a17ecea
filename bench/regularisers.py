"""Regularisers that keep the fused kernels, measured: validation loss on tiny Shakespeare after
a fixed wall-time budget, for a preset alone and with each of --weight-drop, --embed-drop,
--variational (and --ema, or any other ModelConfig / TrainConfig field: hidden=1024,
weight_decay=0.1), the variants alternated within each repeat so that the machine's drift falls
on all of them alike.

    python bench/regularisers.py [--budget 60] [--preset default] [--repeats 2]
                                 [--variants none,weight_drop=0.2,embed_drop=0.1,variational=0.2]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from pathlib import Path

from charnn.config import RunConfig, apply_preset
from charnn.trainer import train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
DEFAULT = "none,weight_drop=0.2,embed_drop=0.1,variational=0.2,weight_drop=0.2+embed_drop=0.1+variational=0.2"


def parse(variant: str) -> dict:
    """'weight_drop=0.2+ema=0.999' -> {"weight_drop": 0.2, "ema": 0.999}; 'none' -> {}."""
    if variant == "none":
        return {}
    out = {}
    for part in variant.split("+"):
        k, v = part.split("=")
        out[k] = float(v)
    return out


def one(preset: str, budget: float, extra: dict) -> tuple[float, int]:
    cfg = RunConfig()
    apply_preset(cfg, preset)
    cfg.data.text, cfg.data.split = str(DATA), (0.9, 0.1, 0.0)  # nanoGPT's split, as time_to_quality
    cfg.train.max_time, cfg.train.eval_every, cfg.train.snapshot_steps = budget, 10**9, ()
    cfg.train.keep_checkpoints = "none"
    for k, v in extra.items():
        target = cfg.model if hasattr(cfg.model, k) else cfg.train
        setattr(target, k, type(getattr(target, k))(v))  # hidden=1024 stays an int
    with tempfile.TemporaryDirectory() as d:
        res = train(cfg, Path(d) / "run", progress=False)
    return res.last_val_loss, res.steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variants", default=DEFAULT)
    args = ap.parse_args()
    if not DATA.exists():
        print(f"skipped: {DATA} is absent")
        return 0
    variants = args.variants.split(",")
    losses: dict[str, list[float]] = {v: [] for v in variants}
    steps: dict[str, list[int]] = {v: [] for v in variants}
    for r in range(args.repeats):
        order = variants if r % 2 == 0 else variants[::-1]  # alternate: drift falls on every variant
        for v in order:
            loss, n = one(args.preset, args.budget, parse(v))
            losses[v].append(loss)
            steps[v].append(n)
            print(f"  repeat {r + 1}: {v}: {loss:.4f} ({n} steps)", file=sys.stderr, flush=True)
    base = statistics.mean(losses[variants[0]])
    print(f"\ntiny Shakespeare 90/10, preset {args.preset}, {args.budget:g} s per run, {args.repeats} alternated repeats\n")
    print(f"| variant | val loss per run | mean | bpc | ratio to {variants[0]} | steps |")
    print("|---|---|---|---|---|---|")
    for v in variants:
        m = statistics.mean(losses[v])
        runs = " / ".join(f"{x:.4f}" for x in losses[v])
        print(f"| {v} | {runs} | {m:.4f} | {m / math.log(2):.3f} | {m / base:.3f} | {round(statistics.mean(steps[v]))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
