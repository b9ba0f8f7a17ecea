"""Fault injection: kill training at random moments and inside checkpoint writes, then resume.

Each trial starts `charnn train` in a fresh run directory and kills it, either with SIGKILL after
a random delay, or by making the checkpoint writer kill itself at a chosen point of its N-th
write (CHARNN_FAULT, see charnn.files): half-way through the temporary file, after it and before
the rename, or after the rename. Then it does what a user would: the original command with
`--resume` appended (or the plain command if the run had not saved yet), until the run finishes.
A trial survives when the final `last.safetensors` is bit-identical to an uninterrupted run's,
the logs hold the same records (timing fields aside) with no duplicates, and no temporary file
is left.

    python bench/faults.py            # 24 trials, prints a table and "survived N of 24"
    python bench/faults.py --trials 60 --seed 3
    python bench/faults.py --model transformer

tests/test_faults.py runs a few of the same trials in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POINTS = ("mid-tmp", "after-tmp", "after-rename")
TIMING = {"elapsed", "chars_per_s"}  # log fields that depend on the clock, not on the computation
STEPS, EVAL_EVERY = 150, 25
COMMON = ["--batch-size", "8", "--threads", "1", "--quiet", "--samples", "0", "--max-steps", str(STEPS),
          "--eval-every", str(EVAL_EVERY), "--checkpoint-every", "0", "--dropout", "0.1"]
MODELS = {"lstm": ["--preset", "tiny", "--hidden", "32", "--seq-len", "20", *COMMON],
          "transformer": ["--cell", "transformer", "--layers", "2", "--heads", "2", "--embed", "16", "--block", "20",
                          *COMMON]}
ARGS = MODELS["lstm"]


def learnable_text(n_lines: int = 600, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = ["one", "two", "three", "four", "five"]
    return "\n".join(" ".join(words[:rng.randint(1, 5)]) + "." for _ in range(n_lines)) + "\n"


def charnn(args: list[str], env: dict, kill_after: float | None = None, timeout: float = 300) -> int:
    """Run `charnn ARGS`; with kill_after, SIGKILL it after that many seconds (if still running)."""
    p = subprocess.Popen([sys.executable, "-m", "charnn", *args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env, text=True)
    try:
        if kill_after is not None:
            try:
                p.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise RuntimeError(f"charnn {' '.join(args)} ran past {timeout} s")
    if p.returncode not in (0, -signal.SIGKILL):
        raise RuntimeError(f"charnn {' '.join(args)} exited {p.returncode}: {err.strip()[-500:]}")
    return p.returncode


def train_command(text: Path, out: Path, model: str = "lstm") -> list[str]:
    return ["train", str(text), "--out", str(out), *MODELS[model]]


def straight_run(text: Path, out: Path, env: dict, model: str = "lstm") -> None:
    charnn(train_command(text, out, model), env)


def faulted_run(text: Path, out: Path, env: dict, fault: tuple, model: str = "lstm") -> int:
    """Run to the end through one fault; return how many processes it took."""
    kind, value = fault
    first_env, kill_after = dict(env), None
    if kind == "kill":
        kill_after = value
    else:
        first_env["CHARNN_FAULT"] = value
    processes = 1
    rc = charnn(train_command(text, out, model), first_env, kill_after)
    while rc != 0:
        processes += 1
        if processes > 5:
            raise RuntimeError("the run did not finish after 5 restarts")
        resume = (out / "last.safetensors").exists()
        rc = charnn(train_command(text, out, model) + (["--resume"] if resume else []), env)
    return processes


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in path.read_text(encoding="utf-8").splitlines()]


def differences(straight: Path, faulted: Path) -> list[str]:
    """What differs between an uninterrupted run and one that went through faults."""
    from charnn import checkpoint as ckpt

    out = []
    a, b = ckpt.load(straight, "last"), ckpt.load(faulted, "last")
    if a.meta["step"] != b.meta["step"]:
        out.append(f"steps {a.meta['step']} vs {b.meta['step']}")
    for k in a.weights:
        if not (a.weights[k].shape == b.weights[k].shape and bool((a.weights[k] == b.weights[k]).all())):
            out.append(f"weight {k} differs")
            break
    for k in a.tensors:
        if k.startswith(("optim.", "state.")) and not bool((a.tensors[k] == b.tensors[k]).all()):
            out.append(f"training state {k} differs")
            break
    for name in ("metrics.jsonl", "samples.jsonl"):
        ra, rb = _records(straight / name), _records(faulted / name)
        if ra != rb:
            out.append(f"{name}: {len(ra)} records vs {len(rb)}" if len(ra) != len(rb) else f"{name} differs")
    left = [p.name for p in faulted.glob(".*.tmp")]
    if left:
        out.append(f"temporary files left: {left}")
    return out


def trials(n: int, seed: int, straight_seconds: float) -> list[tuple]:
    """Faults at every point of the 1st-4th checkpoint write, then random SIGKILL moments."""
    rng = random.Random(seed)
    chosen = [("point", f"{p}:last.safetensors:{k}") for k in (2, 4, 1, 3) for p in POINTS]
    while len(chosen) < n:
        # within the run's own duration (process start included), where a kill lands in training
        chosen.append(("kill", round(rng.uniform(0.25, 0.85) * straight_seconds, 2)))
    return chosen[:n]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", choices=sorted(MODELS), default="lstm", help="the run to break (default lstm)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, CHARNN_CACHE=str(tmp / "cache"), PYTHONUNBUFFERED="1")
        env.pop("CHARNN_FAULT", None)
        text = tmp / "text.txt"
        text.write_text(learnable_text())
        t0 = time.perf_counter()
        straight_run(text, tmp / "straight", env, args.model)
        took = time.perf_counter() - t0
        print(f"uninterrupted {args.model} run: {STEPS} steps in {took:.1f} s (process start included)")
        print("| # | fault | processes | survived | what differs |\n|---|---|---|---|---|")
        survived = landed = 0
        faults = trials(args.trials, args.seed, took)
        for i, fault in enumerate(faults, 1):
            out = tmp / f"run{i}"
            procs = faulted_run(text, out, env, fault, args.model)
            diff = differences(tmp / "straight", out)
            survived += not diff
            landed += procs > 1
            what = f"SIGKILL after {fault[1]} s" if fault[0] == "kill" else f"CHARNN_FAULT={fault[1]}"
            print(f"| {i} | {what} | {procs} | {'yes' if not diff else 'NO'} | {'; '.join(diff) or '-'} |", flush=True)
        print(f"survived {survived} of {len(faults)} ({landed} faults stopped the run before its end; "
              f"the others came after it had finished)")
        return 0 if survived == len(faults) else 1


if __name__ == "__main__":
    sys.exit(main())
