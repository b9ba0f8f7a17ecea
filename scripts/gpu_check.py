"""`make gpu-check`: run charnn's whole GPU path on this machine and print a verdict per line.

On a machine with CUDA (or Apple MPS) it takes a few minutes: training in fp32 and bf16 (the loss
falls; under bf16 the recurrence stays fp32 and the read-out runs in bf16), a run killed after its
second checkpoint and resumed equals a straight run (without dropout, and with dropout on one
layer, where torch's own RNG state is all there is to restore), sampling (a seed gives one text),
torchrun over every GPU, and the benchmark suite's GPU rows. On a machine without a GPU it says so
and exits 0. docs/commands.md (the GPU section) says when this last ran on real hardware.

    python scripts/gpu_check.py                  # the GPU here, or "no GPU here" and exit 0
    python scripts/gpu_check.py --device cpu     # the same checks on the CPU: a rehearsal of this
                                                 # script (tests/test_gpu_check.py), not a GPU check

Exit code 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))


def charnn(*args, procs: int = 0, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "charnn", *map(str, args)]
    if procs:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m",
               "charnn", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def tail(r: subprocess.CompletedProcess) -> str:
    return (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1][-300:]


def refused_in_one_line(r: subprocess.CompletedProcess, about: str) -> bool:
    """A charnn command failed with charnn's own one-line error mentioning `about`, and no
    traceback from charnn's code (under torchrun, the launcher prints one of its own when a child
    fails)."""
    own = [x for x in r.stderr.splitlines() if x.startswith("charnn train: error:")]
    return (r.returncode != 0 and bool(own) and all(about in x for x in own)
            and not re.search(r'File "[^"]*(src|site-packages)/charnn/', r.stderr))


def what_it_said(stderr: str, last: int = 8) -> list[str]:
    """The lines of a failed command's stderr worth printing: its error lines (under torchrun the
    child's error comes before the launcher's own summary, which a plain tail would show alone),
    then its last lines."""
    lines = stderr.strip().splitlines()
    errors = [x for x in lines[:-last] if re.search(r"Error\b|error:", x)]
    return list(dict.fromkeys(errors))[:6] + lines[-last:]


def weight_difference(run_a: Path, run_b: Path) -> float:
    """The largest difference between two runs' last weights."""
    from charnn import checkpoint as ckpt

    a, b = ckpt.load(run_a, "last").weights, ckpt.load(run_b, "last").weights
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def bf16_dtypes(model, device: str):
    """The dtypes, under charnn's bf16 autocast, of the recurrence's output and of the logits in
    the model's own forward pass, and of the recurrent module called bare (PyTorch's own choice)."""
    import torch

    from charnn.devices import autocast

    seen = {}

    def watch(module, inputs, output):  # a forward hook that returns None leaves the output alone
        seen["rnn"] = output[0].dtype

    hook = model.rnn.register_forward_hook(watch)
    x = torch.randint(0, model.cfg.vocab_size, (4, 32), device=device)
    with torch.no_grad(), autocast(device, "bf16"):
        try:
            logits, _ = model(x)
        finally:
            hook.remove()
        bare = model.rnn(model.embed(x))[0].dtype
    return seen.get("rnn"), logits.dtype, bare


PARTS = ("train", "resume", "sample", "torchrun", "bench", "graph")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], default="auto",
                    help="auto: the GPU here (CUDA, else MPS), or say there is none and exit 0; cpu: a rehearsal")
    ap.add_argument("--steps", type=int, default=300, help="steps of each training check (default 300)")
    ap.add_argument("--hidden", type=int, default=256, help="the models' width (default 256)")
    ap.add_argument("--only", default=",".join(PARTS), metavar="PARTS",
                    help=f"comma-separated, from {','.join(PARTS)} (default: all)")
    args = ap.parse_args(argv)
    parts = set(args.only.split(","))
    if not parts <= set(PARTS):
        ap.error(f"--only takes {','.join(PARTS)}; got {args.only}")

    import torch
    from faults import differences
    from suite import device_name, gpu_device  # the bench's GPU rows choose and name their device alike

    from charnn import checkpoint as ckpt

    device = gpu_device(args.device)
    if device is None:
        print(f"gpu-check: no GPU here (CUDA: no, MPS: no; torch {torch.__version__}): nothing to check")
        return 0
    print(f"gpu-check on {device_name(device)} ({device}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')})", flush=True)
    results: list[bool] = []

    def verdict(ok: bool, what: str, detail: str = "", runs: tuple = ()) -> None:
        results.append(ok)
        print(f"{'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}", flush=True)
        for r in runs if not ok else ():  # what a failed command said, to act on without a rerun
            if r.returncode != 0:
                print("\n".join(f"     | {x[-200:]}" for x in what_it_said(r.stderr)), flush=True)

    def info(what: str) -> None:
        print(f"info {what}", flush=True)

    steps = args.steps
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, CHARNN_CACHE=str(tmp / "cache"), PYTHONUNBUFFERED="1")
        env.pop("CHARNN_FAULT", None)
        text = tmp / "t.txt"
        text.write_text((ROOT / "docs" / "commands.md").read_text(encoding="utf-8") * 20, encoding="utf-8")
        common = ["--device", device, "--quiet", "--samples", "0", "--hidden", args.hidden]

        # 1. Training learns, in fp32 and bf16 (the fp32 run is also what sampling and --cuda-graph use).
        for precision in ("fp32", "bf16") if "train" in parts else ("fp32",) if parts & {"sample", "graph"} else ():
            out = tmp / precision
            r = charnn("train", text, "--out", out, *common, "--eval-every", max(steps // 3, 1), "--max-steps", steps,
                       "--precision", precision, env=env)
            losses = [json.loads(x)["train_loss"] for x in (out / "metrics.jsonl").read_text().splitlines()
                      if "train_loss" in x] if r.returncode == 0 else []
            verdict(r.returncode == 0 and len(losses) > 2 and losses[-1] < losses[0] - 0.5, f"train {precision}",
                    f"loss {losses[0]:.3f} -> {losses[-1]:.3f} in {steps} steps" if losses else tail(r), (r,))

        # 2. Under bf16 autocast the recurrence runs in fp32 and the read-out in bf16.
        if (tmp / "bf16" / "last.safetensors").exists():
            try:
                model = ckpt.load(tmp / "bf16", "last").build_model(device)
                rnn, readout, bare = bf16_dtypes(model, device)
                from charnn.model import fp32_recurrence

                want = torch.float32 if fp32_recurrence(device) else torch.bfloat16  # a GPU's fp32, a CPU's bf16
                verdict(rnn == want and readout == torch.bfloat16, "bf16 autocast runs the recurrence as charnn's rule says",
                        f"recurrence {rnn} (the rule: {want} on {device}), read-out {readout}")
                info(f"nn.{model.cfg.cell.upper()} called bare under bf16 autocast on {device} returns {bare} "
                     f"(charnn does not call it so)")
            except Exception as e:  # noqa: BLE001 - one failed check must not hide the others
                verdict(False, "bf16 autocast runs the recurrence as charnn's rule says", f"{type(e).__name__}: {e}")

        # 3. A run killed after its second checkpoint and resumed equals a straight run.
        def killed_and_resumed(key: int, extra: list, env: dict = env):
            """Run straight, and killed after checkpoint 2 then resumed: (the runs, the max weight
            difference and the run folders' differences), or (the runs, None, None) if one failed."""
            cmd = ["train", text, *common, "--eval-every", max(steps // 6, 1), "--max-steps", steps // 2, *extra]
            straight = charnn(*cmd, "--out", tmp / f"straight{key}", env=env)
            killed = charnn(*cmd, "--out", tmp / f"resumed{key}",
                            env=dict(env, CHARNN_FAULT="after-rename:last.safetensors:2"))
            resumed = charnn(*cmd, "--out", tmp / f"resumed{key}", "--resume", env=env)
            runs = (straight, killed, resumed)
            if not (straight.returncode == 0 and killed.returncode != 0 and resumed.returncode == 0):
                return runs, None, None
            return runs, weight_difference(tmp / f"straight{key}", tmp / f"resumed{key}"), \
                differences(tmp / f"straight{key}", tmp / f"resumed{key}")

        def resume_verdict(key: int, label: str, extra: list, env: dict = env) -> None:
            what = f"killed after checkpoint 2 and resumed equals a straight run ({label})"
            runs, diff, found = killed_and_resumed(key, extra, env)
            if diff is None:
                verdict(False, what, "; ".join(tail(r) for r in runs), (runs[0], runs[2]))
                return
            # bit-identical is what the CPU gives and what CUDA should (cuDNN's RNN kernels are
            # deterministic for one configuration); a difference of float rounding is reported
            verdict(diff < 1e-4 and not any(f.startswith(("steps", "metrics.jsonl:", "temporary")) for f in found),
                    what, "bit-identical" if not found else f"max weight difference {diff:.2e}; {'; '.join(found)}")

        def resume_info(key: int, label: str, extra: list, env: dict = env) -> None:
            runs, diff, found = killed_and_resumed(key, extra, env)
            info(f"{label}, killed and resumed vs straight: " + (
                "; ".join(tail(r) for r in runs) if diff is None else
                "bit-identical" if not found else f"max weight difference {diff:.2e}; {found[0]}"))

        if "resume" in parts:
            resume_verdict(0, "no dropout, 2 layers", ["--dropout", "0"])
            resume_verdict(1, "dropout 0.1, 1 layer", ["--dropout", "0.1", "--layers", "1"])
            if device == "cuda":  # the README says this one cannot be exact: see how far apart it lands
                resume_info(2, "dropout 0.1 between 2 layers (cuDNN's dropout state is not restorable)",
                            ["--dropout", "0.1", "--layers", "2"])

        # 4. Sampling: one seed, one text (the draw uses a CPU generator: the same text on every device).
        if "sample" in parts:
            s1 = charnn("sample", tmp / "fp32", "--device", device, "--length", 200, "--seed", 1, env=env)
            s2 = charnn("sample", tmp / "fp32", "--device", device, "--length", 200, "--seed", 1, env=env)
            verdict(s1.returncode == 0 and len(s1.stdout) > 150 and s1.stdout == s2.stdout,
                    "sample (the same seed twice gives the same text)", "" if s1.returncode == 0 else tail(s1),
                    (s1, s2))
        if "sample" in parts and device != "cpu" and s1.returncode == 0:
            sc = charnn("sample", tmp / "fp32", "--device", "cpu", "--length", 200, "--seed", 1, env=env)
            same = next((i for i, (p, q) in enumerate(zip(s1.stdout, sc.stdout)) if p != q),
                        min(len(s1.stdout), len(sc.stdout)))
            info(f"the same seed on the CPU agrees for {same} of {len(s1.stdout)} characters "
                 f"(the probabilities differ in float rounding between devices)")

        # 5. torchrun: one process per GPU (NCCL and DDP from two GPUs; with one, the launcher path alone);
        #    on a Mac, torchrun with MPS is refused, in one line.
        n = torch.cuda.device_count() if device == "cuda" else 2 if device == "cpu" else 0
        if "torchrun" in parts and n:
            r = charnn("train", text, "--out", tmp / "ddp", *common, "--eval-every", 25, "--max-steps", 50,
                       "--batch-size", 8 * n, procs=n, env=env)
            verdict(r.returncode == 0 and "after 50 steps" in r.stderr, f"torchrun over {n} {device} processes",
                    "" if r.returncode == 0 else tail(r), (r,))
            if device == "cuda" and n == 1:
                info("one GPU: torchrun ran one process, so NCCL and DDP were not exercised (they need two GPUs)")
        elif "torchrun" in parts:
            r = charnn("train", text, "--out", tmp / "ddp", *common, "--max-steps", 10, procs=2, env=env)
            verdict(refused_in_one_line(r, "MPS"), "torchrun with --device mps is refused in one line",
                    next((x for x in r.stderr.splitlines() if x.startswith("charnn train: error:")), tail(r)))

        # 6. The benchmark suite's GPU rows.
        if "bench" in parts:
            b = subprocess.run([sys.executable, str(ROOT / "bench" / "suite.py"), "--only", "gpu",
                                "--gpu-device", device,
                                *(["--gpu-small"] if device == "cpu" else [])], capture_output=True, text=True,
                               timeout=1800, env=env)
            rows = [x for x in b.stdout.splitlines() if x.startswith("| GPU")]
            # all three measured; on a Mac the --cuda-graph row says it is for CUDA
            skipped = [x for x in rows if "skipped" in x and not (device == "mps" and "--cuda-graph" in x)]
            verdict(b.returncode == 0 and len(rows) == 3 and not skipped, "bench GPU rows",
                    " / ".join(x.split(" | ")[0].strip("| ") + ": " + " ".join(x.split(" | ")[1:4]) for x in rows)
                    if rows else tail(b), (b,))
            for x in rows:
                print(f"     {x}")

        # 7. --cuda-graph: the fp32 run again with each step replayed from one captured graph (on
        #    the CPU rehearsal, charnn's stand-in for one): the same run up to float rounding, a
        #    killed and resumed run bit-identical, and how much faster.
        if "graph" in parts and device == "mps":
            r = charnn("train", text, "--out", tmp / "graph", *common, "--max-steps", 5, "--cuda-graph", env=env)
            said = [x for x in r.stderr.splitlines() if x.startswith("charnn train: error:")]
            verdict(refused_in_one_line(r, "needs a CUDA GPU") and len(said) == 1 and "Traceback" not in r.stderr,
                    "--cuda-graph is refused on MPS in one line", said[0] if said else tail(r))
        elif "graph" in parts:
            genv = dict(env, CHARNN_CUDA_GRAPH_STAND_IN="1") if device == "cpu" else env
            r = charnn("train", text, "--out", tmp / "graph", *common, "--eval-every", max(steps // 3, 1),
                       "--max-steps", steps, "--cuda-graph", env=genv)
            what = "--cuda-graph trains the same run as without"
            if r.returncode == 0 and (tmp / "fp32" / "last.safetensors").exists():
                diff = weight_difference(tmp / "fp32", tmp / "graph")
                eager_log, graph_log = (
                    [json.loads(x) for x in (tmp / run / "metrics.jsonl").read_text().splitlines()]
                    for run in ("fp32", "graph"))
                val = [[x["val_loss"] for x in log if "val_loss" in x] for log in (eager_log, graph_log)]
                speed = [statistics.median(x["chars_per_s"] for x in log if "chars_per_s" in x)
                         for log in (eager_log, graph_log)]
                # the same arithmetic, in other kernels (cuBLAS and cuDNN choose theirs under capture)
                verdict(bool(val[0]) and abs(val[0][-1] - val[1][-1]) < 0.02, what,
                        f"validation loss {val[0][-1]:.4f} eager, {val[1][-1]:.4f} graph; max weight difference "
                        f"{diff:.2e}")
                info(f"--cuda-graph trained at {speed[1]:,.0f} chars/s against {speed[0]:,.0f} eager "
                     f"(x{speed[1] / speed[0]:.2f}; median of the logged rates, {args.hidden} wide, batch 32 x 32)")
            else:
                verdict(False, what, tail(r), (r,))
            resume_verdict(3, "--cuda-graph, dropout 0.1, 1 layer",
                           ["--dropout", "0.1", "--layers", "1", "--cuda-graph"], genv)
    print(f"gpu-check: {sum(results)} of {len(results)} ok")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
