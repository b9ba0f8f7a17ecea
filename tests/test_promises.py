"""What the README promises, each tested so that it fails when the promise does."""

import json
import math
import os
import re
import shutil
import signal

import numpy as np
import pytest

from charnn import checkpoint as ckpt
from charnn.config import PRESETS, RunConfig, TrainConfig, apply_preset
from charnn.trainer import train
from helpers import learnable_text, tiny_config
from helpers import TINY, charnn


def test_a_second_ctrl_c_aborts_at_once():
    from charnn.trainer import _StopFlag

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs in a background job (nohup ... &)
    with _StopFlag() as flag:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.set and flag.signum == signal.SIGINT  # the first asks the loop to stop
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second aborts
    assert signal.getsignal(signal.SIGINT) is before  # and the handler is put back


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["default", "large", "long", "paper", "gpt-muon"])
def test_every_preset_builds_and_trains(tmp_path, preset):
    (tmp_path / "t.txt").write_text(learnable_text(3000))
    cfg = RunConfig()
    apply_preset(cfg, preset)
    for k, v in PRESETS[preset].get("train", {}).items():  # all of them, eval_every included, before the overrides
        assert getattr(cfg.train, k) == v, k
    cfg.data.text = str(tmp_path / "t.txt")
    cfg.train.max_steps, cfg.train.eval_every, cfg.train.threads = 10, 10, 2
    res = train(cfg, tmp_path / "run", progress=False)
    saved = ckpt.load(tmp_path / "run", "last")
    want = PRESETS[preset].get("model", {})
    for k, v in want.items():
        if k != "embed":  # capped at the vocabulary
            assert getattr(saved.config.model, k) == v, k
    for k, v in PRESETS[preset].get("train", {}).items():  # e.g. large's --ema 0.999 reaches the saved run
        if k != "eval_every":  # set to 10 above
            assert getattr(saved.config.train, k) == v, k
    assert saved.config.preset == preset and res.steps == 10
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 10 and first["train_loss"] < math.log(len(saved.vocab))  # it learned something


@pytest.mark.slow
def test_unit_bytes_end_to_end(tmp_path):
    text = ("naïve café 日本語 " * 300 + "\n") * 3
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    r = charnn("train", tmp_path / "t.txt", "--out", tmp_path / "r", *TINY, "--unit", "bytes", "--max-steps", "60",
               "--eval-every", "30", "--samples", "0")
    assert r.returncode == 0, r.stderr
    loaded = ckpt.load(tmp_path / "r")
    assert loaded.vocab.unit == "bytes" and set(loaded.vocab.codes.tolist()) == set(text.encode("utf-8"))
    s = charnn("sample", tmp_path / "r", "--length", "200", "--seed", "1")
    assert s.returncode == 0 and len(s.stdout.encode("utf-8", "surrogateescape")) > 0
    e = json.loads(charnn("eval", tmp_path / "r", "--json").stdout)
    assert e["chars"] > 100 and e["loss"] < math.log(len(loaded.vocab))  # scored in bytes, better than uniform
    (tmp_path / "bin.dat").write_bytes(bytes([0xC3, 0xA9]) * 50)  # bytes it knows, not all of them valid alone
    e = charnn("eval", tmp_path / "r", "--text", tmp_path / "bin.dat", "--json")
    assert e.returncode == 0 and json.loads(e.stdout)["chars"] == 99


@pytest.mark.slow
def test_checkpoint_last_samples_the_last_checkpoint(text_file, tmp_path):
    train(tiny_config(text_file, max_steps=40, eval_every=40), tmp_path / "run", progress=False)
    early = (tmp_path / "run" / "last.safetensors").read_bytes()
    train(None, tmp_path / "run", resume=True, progress=False, overrides={"max_steps": 80})
    (tmp_path / "run" / "best.safetensors").write_bytes(early)  # best: step 40; last: step 80
    last = charnn("sample", tmp_path / "run", "--checkpoint", "last", "--length", "120", "--seed", "2",
                  "--temperature", "1")
    direct = charnn("sample", tmp_path / "run" / "last.safetensors", "--length", "120", "--seed", "2",
                    "--temperature", "1")
    best = charnn("sample", tmp_path / "run", "--length", "120", "--seed", "2", "--temperature", "1")
    assert last.returncode == 0 and last.stdout == direct.stdout and last.stdout != best.stdout


def test_an_inspected_split_is_read_after_the_20000_characters_before_it(tmp_path):
    from charnn.evaluate import model_text
    from charnn.inspect import open_subject
    from charnn.subject import CONTEXT

    text = learnable_text(12000)  # ~100K characters: the validation split starts past 20,000
    (tmp_path / "t.txt").write_text(text)
    cfg = tiny_config(tmp_path / "t.txt", max_steps=2)
    train(cfg, tmp_path / "run", progress=False)
    subject = open_subject(tmp_path / "run", split="val", chars=500)
    start = int(len(text) * 0.9)  # the training split is the first 90%
    assert CONTEXT == 20_000 and subject.context == text[start - CONTEXT:start]
    assert subject.text == text[start:start + 500]
    assert np.array_equal(model_text(subject.loaded, split="val").ids[:500], subject.ids)


def test_snapshots_at_the_blogs_steps(text_file, tmp_path):
    assert TrainConfig().snapshot_steps == (100, 300, 500, 700, 1200, 2000)
    train(tiny_config(text_file, max_steps=700, eval_every=100000), tmp_path / "run", progress=False)
    snaps = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in snaps] == [100, 300, 500, 700]
    assert len({s["text"] for s in snaps}) == 4


@pytest.mark.slow
def test_the_progress_line_reports_what_it_says(text_file, tmp_path):
    r = charnn("train", text_file, "--out", tmp_path / "r", *[a for a in TINY if a != "--quiet"], "--max-steps", "40",
               "--eval-every", "20", "--samples", "0")
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("step ")]
    pat = re.compile(r"step (\d+)  epoch (\d+\.\d\d)  train (\d+\.\d{4})  val (\d+\.\d{4}) \((\d+\.\d{3}) bpc\)  "
                     r"([\d,]+) chars/s")
    got = [pat.fullmatch(x) for x in lines]
    assert len(got) == 2 and all(got), lines
    metrics = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    for m in got:
        step, val = int(m.group(1)), float(m.group(4))
        logged = next(x for x in metrics if x["step"] == step and "val_loss" in x)
        assert val == pytest.approx(logged["val_loss"], abs=1e-4)
        assert float(m.group(5)) == pytest.approx(val / math.log(2), abs=1e-3)
        assert float(m.group(2)) == pytest.approx(logged["epoch"], abs=0.01)
    assert int(got[-1].group(6).replace(",", "")) > 0


@pytest.mark.slow
def test_grid_jobs_share_the_cores(tmp_path):
    from charnn.study.grid import Cell, Settings, run_grid

    (tmp_path / "t.txt").write_text(learnable_text(300))
    entries = [Cell("rnn", 1, 1000, 8, 0), Cell("gru", 1, 1000, 6, 0)]
    run_grid(str(tmp_path / "t.txt"), tmp_path / "g", entries, Settings(max_steps=3, embed=8), jobs=2)
    threads = {json.loads((tmp_path / "g" / e.name / "config.json").read_text())["train"]["threads"] for e in entries}
    assert threads == {max(1, (os.cpu_count() or 1) // 2)}
    shutil.rmtree(tmp_path / "g")
