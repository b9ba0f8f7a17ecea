"""Training across processes with torchrun (gloo on the CPU) computes what one process computes."""

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from helpers import learnable_text

ARGS = ["--preset", "tiny", "--hidden", "32", "--seq-len", "20", "--batch-size", "8", "--threads", "1", "--quiet",
        "--dropout", "0", "--eval-every", "10", "--samples", "0", "--schedule", "constant"]  # constant: a run stopped
# at step 12 and resumed to 24 follows the same learning rates as one run to 24


def run(*args, procs=1, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if procs == 1:
        cmd = [sys.executable, "-m", "charnn", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
               "-m", "charnn", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def weights(path):
    return {k: v for k, v in load_file(path).items() if k.startswith("model.")}


def assert_same_weights(a, b, atol=1e-6):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and wa
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0, msg=k)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    (d / "t.txt").write_text(learnable_text())
    return d


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(folder):
    run("train", "t.txt", "--out", "single", *ARGS, "--max-steps", "20", cwd=folder)
    r = run("train", "t.txt", "--out", "ddp", *ARGS, "--max-steps", "20", procs=2, cwd=folder)
    assert_same_weights(folder / "single" / "last.safetensors", folder / "ddp" / "last.safetensors")
    # each rank trained its own half of the streams: the carried state gathered from the two ranks is
    # the one process's, stream for stream (had every rank trained the whole batch, the weights would
    # agree but the gathered state would hold 16 streams, or the halves would repeat)
    sa, sb = load_file(folder / "single" / "last.safetensors"), load_file(folder / "ddp" / "last.safetensors")
    for k in ("state.h", "state.c"):
        assert sb[k].shape == sa[k].shape == (1, 8, 32)
        torch.testing.assert_close(sb[k], sa[k], atol=1e-5, rtol=0)
        assert not torch.allclose(sb[k][:, :4], sb[k][:, 4:])
    # rank 0 alone reports and writes: one summary line, one log line per 10 steps
    assert r.stderr.count("stopped by max-steps after 20 steps") == 1
    steps = [line for line in (folder / "ddp" / "metrics.jsonl").read_text().splitlines() if '"train_loss"' in line]
    assert len(steps) == 2
    # the logged loss is the global batch's, as in the single process
    single = (folder / "single" / "metrics.jsonl").read_text().splitlines()
    import json

    la = [json.loads(x)["train_loss"] for x in steps]
    lb = [json.loads(x)["train_loss"] for x in single if '"train_loss"' in x]
    assert la == pytest.approx(lb, abs=1e-5)


@pytest.mark.slow
def test_resume_with_another_number_of_processes(folder):
    run("train", "t.txt", "--out", "ref", *ARGS, "--max-steps", "24", cwd=folder)
    # 2 processes for 12 steps, then 1 process to step 24 (the carried state is gathered and re-split)
    run("train", "t.txt", "--out", "a", *ARGS, "--max-steps", "12", procs=2, cwd=folder)
    run("train", "--resume", "--out", "a", "--max-steps", "24", "--quiet", "--samples", "0", cwd=folder)
    assert_same_weights(folder / "ref" / "last.safetensors", folder / "a" / "last.safetensors")
    # and the other way round
    run("train", "t.txt", "--out", "b", *ARGS, "--max-steps", "12", cwd=folder)
    run("train", "--resume", "--out", "b", "--max-steps", "24", "--quiet", "--samples", "0", procs=2, cwd=folder)
    assert_same_weights(folder / "ref" / "last.safetensors", folder / "b" / "last.safetensors")


@pytest.mark.slow
def test_a_batch_that_does_not_split_evenly_is_refused(folder):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "charnn", "train", "t.txt", "--out", "odd", *ARGS, "--batch-size", "7",
                        "--max-steps", "5"], capture_output=True, text=True, cwd=folder, env=env, timeout=300)
    assert r.returncode != 0
    assert "--batch-size 7 must be divisible by the 2 processes" in r.stderr
    # (torchrun then reports the failed ranks in its own words, traceback included)
    assert not (folder / "odd" / "last.safetensors").exists()


@pytest.mark.slow
def test_dropout_resume_with_two_processes_is_exact(folder):
    """Each rank's RNG state is saved and restored: with dropout, 12 + 12 steps equal 24."""
    args = [a if a != "0" or i == 0 or ARGS[i - 1] != "--dropout" else "0.2" for i, a in enumerate(ARGS)]
    assert "0.2" in args
    run("train", "t.txt", "--out", "dref", *args, "--max-steps", "24", procs=2, cwd=folder)
    run("train", "t.txt", "--out", "dsplit", *args, "--max-steps", "12", procs=2, cwd=folder)
    run("train", "--resume", "--out", "dsplit", "--max-steps", "24", "--quiet", "--samples", "0", procs=2, cwd=folder)
    assert_same_weights(folder / "dref" / "last.safetensors", folder / "dsplit" / "last.safetensors", atol=0)
    saved = load_file(folder / "dsplit" / "last.safetensors")
    assert {k for k in saved if k.startswith("rng.")} == {"rng.0.cpu", "rng.1.cpu"}
    assert not torch.equal(saved["rng.0.cpu"], saved["rng.1.cpu"])  # each rank draws its own masks
