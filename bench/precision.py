"""fp32 against bf16 on this CPU (issue #38): the matrix-multiply peak of each precision, charnn's
training step in each (chars/s and the share of that precision's peak), and, with --quality,
a preset (default: `default`) trained in each at equal steps and at equal time on tiny Shakespeare
90/10.

    python bench/precision.py                       # the speed rows (about a minute)
    python bench/precision.py --quality --steps 1000 --seeds 2,4,5 --time 60 --rounds 2
    python bench/precision.py --quality --preset gpt-muon --no-speed --steps 600 --seeds 2,4 --rounds 0

Runs alternate fp32 and bf16 so that both see the same machine (its speed moves by 2x).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from suite import _paired_times

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
# (cell, layers, hidden, batch, window): the default preset's model, the large one's, the paper's 2x512,
# and the gpt-muon preset's transformer (2 blocks x 192, 6 heads, block 64)
SHAPES = [("lstm", 1, 384, 32, 32), ("lstm", 1, 768, 32, 32), ("lstm", 2, 512, 50, 50), ("gru", 1, 384, 32, 32),
          ("transformer", 2, 192, 24, 64)]


def train_flops(cell: str, layers: int, hidden: int, embed: int, vocab: int, block: int = 0) -> float:
    """FLOPs per character of one training step (forward + backward = 3x forward): each layer's
    gate products (4 gates for an LSTM, 3 for a GRU) and the read-out. A transformer's (width =
    hidden): each block's products (query/key/value, output, the MLP's two at 4x: 12 width^2
    multiply-adds) and its attention over the `block` keys (scores and weighted values, 2 x block x
    width multiply-adds, counted as if full: what scaled_dot_product_attention's causal kernel is
    charged for here)."""
    if cell == "transformer":
        return 3 * (layers * (2 * 12 * hidden * hidden + 2 * 2 * block * hidden) + 2 * hidden * vocab)
    gates = 4 if cell == "lstm" else 3
    fwd = sum(2 * gates * hidden * ((embed if k == 0 else hidden) + hidden) for k in range(layers))
    return 3 * (fwd + 2 * hidden * vocab)


def peak(dtype: torch.dtype, n: int = 2048) -> float:
    """GFLOP/s of an n x n matrix product in `dtype`: the fastest of 10 products, as a peak is the
    best the hardware does (on this shared machine a mean or median sometimes caught a slow moment:
    110 GFLOP/s in a suite run whose other rows measured 192, and shares of it read over 100%)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(times) / 1e9


def step_times(cell: str, layers: int, hidden: int, B: int, T: int) -> tuple[float, float, float]:
    """charnn's training step for this model in fp32 and in bf16, timed alternately: -> (fp32
    seconds, bf16 seconds, FLOPs of one step)."""
    from charnn.config import ModelConfig
    from charnn.devices import autocast
    from charnn.model import build

    V = 65
    torch.manual_seed(0)
    shape = dict(embed=hidden, heads=hidden // 32, block=T, dropout=0.0) if cell == "transformer" else dict(embed=64)
    model = build(ModelConfig(cell=cell, layers=layers, hidden=hidden, vocab_size=V, **shape)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))

    def step(precision):
        with autocast("cpu", precision):
            loss, _ = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t32, t16 = _paired_times(lambda: step("fp32"), lambda: step("bf16"), repeats=7)
    return t32, t16, train_flops(cell, layers, hidden, shape.get("embed", 64), V, T) * B * T


def speed() -> None:
    p32, p16 = peak(torch.float32), peak(torch.bfloat16)
    print(f"matmul peak: fp32 {p32:.0f} GFLOP/s, bf16 {p16:.0f} GFLOP/s (x{p16 / p32:.2f})\n")
    print("| model, batch x window | fp32 chars/s | bf16 chars/s | bf16 / fp32 | fp32 % of its peak | bf16 % of its peak |")
    print("|---|---|---|---|---|---|")
    for cell, layers, hidden, B, T in SHAPES:
        t32, t16, flops = step_times(cell, layers, hidden, B, T)
        print(f"| {cell} {layers}x{hidden}, {B} x {T} | {B * T / t32:,.0f} | {B * T / t16:,.0f} | x{t32 / t16:.2f} | "
              f"{100 * flops / t32 / 1e9 / p32:.0f}% | {100 * flops / t16 / 1e9 / p16:.0f}% |", flush=True)


def _run(precision: str, seed: int, preset: str = "default", **train) -> tuple[float, int]:
    from charnn.config import RunConfig, apply_preset
    from charnn.trainer import train as train_run

    cfg = RunConfig()
    apply_preset(cfg, preset)
    cfg.data.text, cfg.data.split = str(DATA), (0.9, 0.1, 0.0)
    cfg.train.precision, cfg.train.seed = precision, seed
    cfg.train.eval_every, cfg.train.snapshot_steps, cfg.train.keep_checkpoints = 10 ** 9, (), "none"
    for k, v in train.items():
        setattr(cfg.train, k, v)
    with tempfile.TemporaryDirectory() as d:
        r = train_run(cfg, Path(d) / "run", progress=False)
    return r.best_val_loss_whole or r.best_val_loss, r.steps


def quality(steps: int, seeds: list[int], budget: float, rounds: int, preset: str = "default") -> None:
    if not DATA.exists():
        print(f"skipped: {DATA} is absent", file=sys.stderr)
        return
    print("\n| run | fp32 (nats, steps) | bf16 (nats, steps) |\n|---|---|---|")
    for seed in seeds:
        a, b = _run("fp32", seed, preset, max_steps=steps), _run("bf16", seed, preset, max_steps=steps)
        print(f"| {steps} steps, seed {seed} | {a[0]:.4f} | {b[0]:.4f} |", flush=True)
    for r in range(rounds):
        a, b = _run("fp32", 1337, preset, max_time=budget), _run("bf16", 1337, preset, max_time=budget)
        print(f"| {budget:g} s, round {r} | {a[0]:.4f} ({a[1]:,}) | {b[0]:.4f} ({b[1]:,}) |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quality", action="store_true", help="also train a preset in each precision")
    ap.add_argument("--preset", default="default", help="with --quality: the preset (default: default)")
    ap.add_argument("--no-speed", action="store_true", help="skip the speed rows")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", default="2,4,5")
    ap.add_argument("--time", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        print("note: this CPU has no native bf16: bf16 is emulated here, and --precision auto picks fp32")
    if not args.no_speed:
        speed()
    if args.quality:
        quality(args.steps, [int(s) for s in args.seeds.split(",")], args.time, args.rounds, args.preset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
