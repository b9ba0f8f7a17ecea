"""End-to-end tests of the `charnn` command as a user runs it: in a subprocess."""

import json
import re
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import cache_at, TINY, StderrLines, charnn, learnable_text


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    with cache_at(d / "cache"):
        (d / "text.txt").write_text(learnable_text())
        r = charnn("train", d / "text.txt", "--out", d / "run", *TINY, "--max-steps", "120", "--eval-every", "40",
                   "--samples", "1", "--min-lr-frac", "0.5")
        assert r.returncode == 0, r.stderr
        return d, r


@pytest.mark.slow
def test_train_prints_samples_and_validation_bpc(run):
    d, r = run
    assert "best validation loss" in r.stderr and "bits per character" in r.stderr
    assert len(r.stdout.strip()) > 100  # the sample goes to stdout
    for name in ("config.json", "vocab.json", "last.safetensors", "best.safetensors", "metrics.jsonl", "samples.jsonl"):
        assert (d / "run" / name).is_file(), name
    assert json.loads((d / "run" / "config.json").read_text())["train"]["min_lr_frac"] == 0.5  # the flag took


@pytest.mark.slow
def test_sample_is_deterministic_per_seed_and_streams(run):
    d, _ = run
    a = charnn("sample", d / "run", "--length", "80", "--seed", "3", "--temperature", "1")
    b = charnn("sample", d / "run", "--length", "80", "--seed", "3", "--temperature", "1")
    c = charnn("sample", d / "run", "--length", "80", "--seed", "4", "--temperature", "1")
    assert a.returncode == 0 and a.stdout == b.stdout and a.stdout != c.stdout
    assert len(a.stdout) == 81  # 80 characters and a newline
    p = charnn("sample", d / "run", "--prime", "one two", "--length", "30", "--temperature", "0")
    assert p.stdout.startswith("one two")
    n = charnn("sample", d / "run", "--num", "3", "--length", "40", "--seed", "1", "--top-k", "3", "--top-p", "0.9")
    assert n.returncode == 0 and n.stdout.count("\n----\n") == 2
    s = charnn("sample", d / "run", "--length", "300", "--stop", ".", "--prime", "one")
    assert s.stdout.rstrip("\n").endswith(".") and s.stdout.count(".") == 1


@pytest.mark.slow
def test_eval_json_and_text(run):
    d, _ = run
    r = charnn("eval", d / "run", "--json")
    out = json.loads(r.stdout)
    assert set(out) == {"loss", "bpc", "perplexity", "chars"}
    assert out["loss"] < 1.5 and out["chars"] > 100
    (d / "other.txt").write_text("one two three.\n" * 30)
    r = charnn("eval", d / "run", "--text", d / "other.txt")
    assert r.returncode == 0 and "bits/char" in r.stdout and "449 characters" in r.stdout
    r = charnn("eval", d / "run", "--split", "test", "--json")
    assert json.loads(r.stdout)["chars"] > 100


@pytest.mark.slow
def test_info(run):
    d, _ = run
    r = charnn("info", d / "run", "--json")
    info = json.loads(r.stdout)
    assert info["steps"] == 120 and info["vocab_size"] == len(set(learnable_text())) and info["params"] > 1000
    assert info["best_val_loss"] < 1.5
    r = charnn("info", d / "run")
    assert "parameters" in r.stdout and "best val" in r.stdout


@pytest.mark.slow
def test_resume_continues_from_the_cli(run, tmp_path):
    d, _ = run
    import shutil

    shutil.copytree(d / "run", tmp_path / "run")
    r = charnn("train", "--resume", "--out", tmp_path / "run", "--max-steps", "140", "--quiet", "--samples", "0")
    assert r.returncode == 0, r.stderr
    assert "after 140 steps" in r.stderr


@pytest.mark.slow
def test_ctrl_c_saves_and_resumes(tmp_path):
    (tmp_path / "t.txt").write_text(learnable_text())
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "charnn", "train", str(tmp_path / "t.txt"), "--out", str(tmp_path / "r"),
                          *TINY[:-1], "--max-steps", "1000000", "--eval-every", "50", "--samples", "0"],
                         stderr=subprocess.PIPE, text=True, env=env)
    lines = StderrLines(p)
    lines.wait_for("step 50")  # training is under way
    p.send_signal(signal.SIGINT)
    err = lines.finish()
    assert p.returncode == 130
    assert "Traceback" not in err and "stopped by interrupt" in err
    r = charnn("info", tmp_path / "r", "--json")
    steps = json.loads(r.stdout)["steps"]
    assert steps >= 50
    r = charnn("train", "--resume", "--out", tmp_path / "r", "--max-steps", str(steps + 10), "--quiet", "--samples", "0")
    assert r.returncode == 0 and f"after {steps + 10} steps" in r.stderr


# The bad-input catalogue lives in test_bad_input.py.


@pytest.mark.slow
def test_appending_resume_to_the_original_command(run, tmp_path):
    import shutil

    d, _ = run
    shutil.copytree(d / "run", tmp_path / "run")
    original = ["train", d / "text.txt", "--out", tmp_path / "run", *TINY, "--eval-every", "40", "--samples", "0"]
    r = charnn(*original, "--max-steps", "140", "--resume")
    assert r.returncode == 0 and "after 140 steps" in r.stderr, r.stderr
    before = (tmp_path / "run" / "last.safetensors").read_bytes()
    r = charnn(*original, "--max-steps", "160", "--hidden", "64", "--seed", "7", "--resume")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "--hidden (saved 32, given 64); --seed (saved 1337, given 7)" in r.stderr, r.stderr
    assert (tmp_path / "run" / "last.safetensors").read_bytes() == before


@pytest.mark.slow
def test_the_end_of_run_report_reads_the_whole_validation_split(tmp_path):
    (tmp_path / "t.txt").write_text(learnable_text(1200))
    r = charnn("train", tmp_path / "t.txt", "--out", tmp_path / "r", *TINY, "--max-steps", "40", "--eval-every", "20",
               "--eval-chars", "200", "--split", "0.6,0.4,0", "--samples", "0")
    assert r.returncode == 0, r.stderr
    m = re.search(r"best validation loss (\d+\.\d+) nats .* \(whole validation split, ([\d,]+) characters\)", r.stderr)
    assert m, r.stderr
    full = json.loads(charnn("eval", tmp_path / "r", "--json").stdout)
    assert int(m.group(2).replace(",", "")) == full["chars"] > 200
    assert abs(float(m.group(1)) - full["loss"]) < 1e-4  # the same number charnn eval gives
    vals = [json.loads(x)["val_loss"] for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
            if "val_loss" in x]
    assert all(abs(v - full["loss"]) > 1e-6 for v in vals)  # the evaluations during training read less


def test_sample_streams_to_stdout_while_it_is_still_generating(run):
    d, _ = run
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "charnn", "sample", str(d / "run"), "--length", "200000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        import select

        first, deadline = b"", time.monotonic() + 90
        while len(first) < 20 and time.monotonic() < deadline:  # wait, with a deadline, for 20 bytes
            if select.select([p.stdout], [], [], 1)[0]:
                first += os.read(p.stdout.fileno(), 20 - len(first))
        assert len(first) == 20
        assert p.poll() is None  # ... while the other 199,980 characters are still being generated
    finally:
        p.kill()
        p.communicate(timeout=30)


@pytest.mark.slow
def test_show_probs_prints_softmax_of_the_logits_over_t_at_each_temperature(run):
    import json

    import numpy as np
    import torch

    from charnn import checkpoint as ckpt

    d, _ = run
    r = charnn("sample", d / "run", "--prime", "one two th", "--show-probs", "--temperatures", "0.3,1,2", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    loaded = ckpt.load(d / "run")
    model = loaded.build_model()
    with torch.no_grad():
        logits = model(torch.as_tensor(loaded.vocab.encode("one two th"))[None])[0][0, -1].double().numpy()
    for t in (0.3, 1.0, 2.0):
        z = np.exp((logits - logits.max()) / t)
        p = z / z.sum()  # softmax(logits / T), computed here in numpy
        top = np.argsort(-logits)[:10]
        assert got["candidates"] == [loaded.vocab.decode([i]) for i in top]
        assert np.allclose(got["probs"][f"{t:g}"], p[top], atol=1e-9)
    assert got["candidates"][0] == "r"  # the model learned "three"
    table = charnn("sample", d / "run", "--prime", "one two th", "--show-probs")
    assert table.returncode == 0 and "T=0.2" in table.stdout and "\u2588" in table.stdout
    bad = charnn("sample", d / "run", "--show-probs", "--temperatures", "hot")
    assert bad.returncode == 2 and "--temperatures" in bad.stderr


def test_a_run_without_a_validation_split_says_its_best_loss_is_the_training_splits(tmp_path):
    (tmp_path / "text.txt").write_text(learnable_text(300))
    r = charnn("train", tmp_path / "text.txt", "--out", tmp_path / "run", *TINY, "--max-steps", "3", "--split", "1,0,0",
               "--samples", "0")
    assert r.returncode == 0, r.stderr
    assert "the validation split is empty" in r.stderr
    assert "best loss on the training split (no validation split)" in r.stderr and "best validation loss" not in r.stderr


def _strict(text: str):
    """json.loads as RFC 8259, JavaScript and jq read JSON: the bare words NaN and Infinity refused."""

    def refuse(word):
        raise ValueError(f"{word} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_output_is_strict_json_with_null_for_what_was_not_measured(tmp_path):
    from charnn.files import strict_json

    assert _strict(strict_json({"a": float("nan"), "b": [1.5, float("inf")], "c": (2, {"d": -float("inf")})})) == {
        "a": None, "b": [1.5, None], "c": [2, {"d": None}]}
    (tmp_path / "t.txt").write_text(learnable_text(400))
    # five steps log no training speed: compare's chars/s is not a number
    r = charnn("compare", tmp_path / "t.txt", "--out", tmp_path / "cmp", "--units", "char", "--max-steps", "5",
               "--params", "20k", "--split", "0.8,0.1,0.1", "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    (res,) = _strict(r.stdout)["results"]
    assert res["chars_per_s"] is None and res["test_bpc"] > 0
    assert _strict((tmp_path / "cmp" / "compare.json").read_text())["results"][0]["chars_per_s"] is None
