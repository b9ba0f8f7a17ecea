"""`make gpu-check`: run charnn's whole GPU path on this machine and print a verdict per line.

On a machine with CUDA (or Apple MPS) it takes a few minutes: training in fp32 and bf16 (the loss
falls, the recurrence stays fp32), resume bit-identity where it holds, torchrun over every GPU,
sampling, and the benchmark suite's GPU rows. On a machine without a GPU it says so and exits 0.
The README's GPU section says when this last ran on real hardware.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def charnn(*args, procs: int = 0, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "charnn", *map(str, args)]
    if procs:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m",
               "charnn", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def main() -> int:
    import torch

    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if not (cuda or mps):
        print(f"gpu-check: no GPU here (CUDA: no, MPS: no; torch {torch.__version__}): nothing to check")
        return 0
    device = "cuda" if cuda else "mps"
    name = torch.cuda.get_device_name(0) if cuda else "Apple MPS"
    print(f"gpu-check on {name} ({device}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')})")
    results = []

    def verdict(ok: bool, what: str, detail: str = "") -> None:
        results.append(ok)
        print(f"{'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["CHARNN_CACHE"] = str(tmp / "cache")
        text = tmp / "t.txt"
        text.write_text(open(ROOT / "README.md", encoding="utf-8").read() * 20)
        common = ["--device", device, "--quiet", "--samples", "0", "--eval-every", "100", "--hidden", "256"]
        for precision in ("fp32", "bf16"):
            out = tmp / precision
            r = charnn("train", text, "--out", out, *common, "--max-steps", "300", "--precision", precision)
            losses = [json.loads(x)["train_loss"] for x in (out / "metrics.jsonl").read_text().splitlines()
                      if "train_loss" in x] if r.returncode == 0 else []
            verdict(r.returncode == 0 and len(losses) > 2 and losses[-1] < losses[0] - 0.5,
                    f"train {precision}", f"loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else r.stderr[-300:])
        r1 = charnn("train", text, "--out", tmp / "whole", *common, "--max-steps", "120", "--dropout", "0")
        r2 = charnn("train", text, "--out", tmp / "split", *common, "--max-steps", "60", "--dropout", "0")
        r3 = charnn("train", "--resume", "--out", tmp / "split", "--max-steps", "120", "--quiet", "--samples", "0")
        if r1.returncode == r2.returncode == r3.returncode == 0:
            from charnn import checkpoint as ckpt

            a, b = ckpt.load(tmp / "whole", "last").weights, ckpt.load(tmp / "split", "last").weights
            diff = max(float((a[k] - b[k]).abs().max()) for k in a)
            verdict(diff < 1e-4, "stop at 60 and resume to 120 equals 120 straight",
                    f"max weight difference {diff:.2e} (0 is bit-identical; cuDNN may reorder sums)")
        else:
            verdict(False, "resume", (r1.stderr + r2.stderr + r3.stderr)[-300:])
        s = charnn("sample", tmp / "fp32", "--device", device, "--length", "200", "--seed", "1")
        s2 = charnn("sample", tmp / "fp32", "--device", device, "--length", "200", "--seed", "1")
        verdict(s.returncode == 0 and len(s.stdout) > 150 and s.stdout == s2.stdout, "sample (same seed, same text)")
        if cuda and torch.cuda.device_count() > 1:
            n = torch.cuda.device_count()
            r = charnn("train", text, "--out", tmp / "ddp", *common, "--max-steps", "50", "--batch-size", str(8 * n),
                       procs=n)
            verdict(r.returncode == 0, f"torchrun over {n} GPUs", r.stderr[-300:] if r.returncode else "")
        b = subprocess.run([sys.executable, str(ROOT / "bench" / "suite.py"), "--quick"], capture_output=True,
                           text=True, timeout=1800)
        rows = [x for x in b.stdout.splitlines() if "GPU" in x or "gpu" in x]
        verdict(b.returncode == 0 and bool(rows), "bench GPU rows", "; ".join(rows)[:500] or b.stderr[-300:])
    print(f"gpu-check: {sum(results)} of {len(results)} ok")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
