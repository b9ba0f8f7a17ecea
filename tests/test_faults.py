"""Crash anywhere: SIGKILL at random moments and inside checkpoint writes, SIGTERM / SIGHUP, and
resuming by appending --resume to the original command; every resumed run must end bit-identical
to an uninterrupted one, with the same log records. bench/faults.py runs many more trials."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import faults  # noqa: E402
from helpers import StderrLines  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    env = dict(os.environ, CHARNN_CACHE=str(d / "cache"), PYTHONUNBUFFERED="1")
    env.pop("CHARNN_FAULT", None)
    text = d / "text.txt"
    text.write_text(faults.learnable_text())
    faults.straight_run(text, d / "straight", env)
    return d, text, env


@pytest.mark.parametrize("fault", [
    ("point", "mid-tmp:last.safetensors:2"),     # half a temporary file on disk
    ("point", "after-tmp:last.safetensors:3"),   # a complete temporary file, not renamed
    ("point", "after-rename:last.safetensors:4"),  # renamed, folder not fsynced
    ("point", "after-tmp:last.safetensors:1"),   # before the first checkpoint exists
    ("kill", 3.5),                               # wherever training is after 3.5 s
], ids=["mid_tmp_2", "after_tmp_3", "after_rename_4", "after_tmp_1", "kill_3s"])
def test_killed_run_resumes_bit_identical(straight, fault):
    d, text, env = straight
    out = d / f"run-{fault[1]}".replace(":", "_")
    processes = faults.faulted_run(text, out, env, fault)
    assert processes >= 2 or fault[0] == "kill"  # the fault did stop the first process
    assert faults.differences(d / "straight", out) == []


@pytest.mark.parametrize("fault", [("point", "mid-tmp:last.safetensors:3"), ("kill", 3.5)], ids=["mid_tmp_3", "kill_3s"])
def test_a_killed_transformer_run_resumes_bit_identical(straight, fault):
    d, text, env = straight
    if not (d / "straight-transformer").exists():
        faults.straight_run(text, d / "straight-transformer", env, "transformer")
    out = d / f"gpt-{fault[1]}".replace(":", "_")
    processes = faults.faulted_run(text, out, env, fault, "transformer")
    assert processes >= 2 or fault[0] == "kill"
    assert faults.differences(d / "straight-transformer", out) == []


def test_differences_notices_a_broken_resume(straight, tmp_path):
    """The comparison itself can fail: a run with one more step, or a duplicated log line."""
    d, text, env = straight
    import shutil

    shutil.copytree(d / "straight", tmp_path / "copy")
    lines = (tmp_path / "copy" / "metrics.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "copy" / "metrics.jsonl").write_text("".join(lines + lines[-1:]))
    assert any("metrics.jsonl" in x for x in faults.differences(d / "straight", tmp_path / "copy"))
    faults.charnn(faults.train_command(text, tmp_path / "copy")[:-8] + ["--resume", "--max-steps", "151"], env)
    assert any("steps 150 vs 151" in x for x in faults.differences(d / "straight", tmp_path / "copy"))


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_save_like_ctrl_c(tmp_path, sig, code):
    (tmp_path / "t.txt").write_text(faults.learnable_text())
    env = dict(os.environ, PYTHONUNBUFFERED="1", CHARNN_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "charnn", "train", str(tmp_path / "t.txt"), "--out", str(tmp_path / "r"),
           "--preset", "tiny", "--hidden", "32", "--threads", "1", "--max-steps", "1000000", "--eval-every", "40",
           "--samples", "0"]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    lines = StderrLines(p)
    lines.wait_for("step 40")  # progress lines: training is under way
    p.send_signal(sig)
    err = lines.finish()
    assert p.returncode == code, err
    assert "Traceback" not in err and "stopped by interrupt" in err
    from charnn import checkpoint as ckpt

    last = ckpt.load(tmp_path / "r", "last")
    assert last.meta["step"] >= 40 and last.meta["stopped_by"] == "interrupt"
    r = subprocess.run(cmd[:-4] + ["--max-steps", str(last.meta["step"] + 5), "--eval-every", "40", "--samples", "0",
                                   "--resume", "--quiet"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"after {last.meta['step'] + 5} steps" in r.stderr
    steps = [json.loads(x)["step"] for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
             if "train_loss" in x]
    assert len(steps) == len(set(steps))  # no duplicated log lines across the stop
