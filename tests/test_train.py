import json
import math
import re

import numpy as np
import pytest
import torch

from charnn import checkpoint as ckpt
from charnn.config import RunConfig, TrainConfig
from charnn.errors import CharnnError
from charnn.trainer import lr_at, train
from helpers import learnable_text, tiny_config


def weights(run_dir, which="last"):
    return ckpt.load(run_dir, which).weights


def test_tiny_model_learns_the_synthetic_corpus(text_file, tmp_path):
    cfg = tiny_config(text_file, max_steps=300, eval_every=100, lr=1e-2)
    res = train(cfg, tmp_path / "run", progress=False)
    # Unigram entropy of this text is about 2.6 nats; its structure allows far less.
    assert res.best_val_loss < 0.75, res.best_val_loss
    metrics = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    vals = [m["val_loss"] for m in metrics if "val_loss" in m]
    assert vals[-1] < vals[0]
    snaps = [json.loads(l) for l in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in snaps] == [100, 200, 300]  # snapshot steps and evaluations
    assert all(len(s["text"]) == cfg.train.snapshot_chars for s in snaps)


@pytest.mark.parametrize("cell,dropout", [("lstm", 0.2), ("gru", 0.0)])
def test_stop_and_resume_is_bit_identical(text_file, tmp_path, cell, dropout):
    def cfg():
        c = tiny_config(text_file, max_steps=40, eval_every=15)
        c.model.cell, c.model.dropout, c.model.layers = cell, dropout, 2
        return c

    train(cfg(), tmp_path / "whole", progress=False)
    # Stop after step 17 (as Ctrl-C does), then resume to the end.
    first = train(cfg(), tmp_path / "split", progress=False, on_step=lambda s: s >= 17)
    assert first.stopped_by == "interrupt" and first.steps == 17
    second = train(None, tmp_path / "split", resume=True, progress=False)
    assert second.steps == 40 and second.stopped_by == "max-steps"
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert ckpt.load(tmp_path / "whole").meta["val_loss"] == ckpt.load(tmp_path / "split").meta["val_loss"]


def test_resume_across_an_epoch_boundary(text_file, tmp_path):
    cfg = lambda: tiny_config(text_file, max_steps=0, max_epochs=2.5, batch_size=16, seq_len=40)
    whole = train(cfg(), tmp_path / "whole", progress=False)
    assert whole.stopped_by == "max-epochs"
    stop_at = int(whole.steps * 0.5)
    train(cfg(), tmp_path / "split", progress=False, on_step=lambda s: s >= stop_at)
    train(None, tmp_path / "split", resume=True, progress=False)
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_is_exact_with_the_awd_regularisers(text_file, tmp_path):
    def cfg():
        c = tiny_config(text_file, max_steps=30)
        c.model.weight_drop, c.model.embed_drop, c.model.variational, c.model.dropout = 0.3, 0.1, 0.2, 0.1
        return c

    train(cfg(), tmp_path / "whole", progress=False)
    train(cfg(), tmp_path / "split", progress=False, on_step=lambda s: s >= 13)
    train(None, tmp_path / "split", resume=True, progress=False)
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "split")
    plain = tiny_config(text_file, max_steps=30)
    train(plain, tmp_path / "plain", progress=False)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["rnn.weight_hh_l0"], weights(tmp_path / "plain")["rnn.weight_hh_l0"])  # they did act


def test_existing_run_is_never_overwritten(text_file, tmp_path):
    train(tiny_config(text_file, max_steps=5), tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "last.safetensors").read_bytes()
    with pytest.raises(CharnnError, match="already holds a run; pass --resume"):
        train(tiny_config(text_file, max_steps=5), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "last.safetensors").read_bytes() == before


def test_resume_refuses_changed_settings_and_missing_run(text_file, tmp_path):
    with pytest.raises(CharnnError, match="holds no last.safetensors"):
        train(None, tmp_path / "none", resume=True)
    train(tiny_config(text_file, max_steps=5), tmp_path / "run", progress=False)
    with pytest.raises(CharnnError, match=r"these differ from it: --hidden \(saved 32, given 99\)"):
        train(None, tmp_path / "run", resume=True, overrides={"hidden": 99})
    text_file.write_text(learnable_text(seed=9))
    with pytest.raises(CharnnError, match="has changed since this run started"):
        train(None, tmp_path / "run", resume=True, overrides={"max_steps": 10})


def test_init_from_maps_a_subset_vocabulary_and_grows_it_for_new_characters(text_file, tmp_path):
    train(tiny_config(text_file, max_steps=30), tmp_path / "base", progress=False)
    sub = tmp_path / "sub.txt"
    sub.write_text("one two. one.\n" * 200)  # every character is in the base vocabulary
    res = train(tiny_config(sub, max_steps=10), tmp_path / "ft", init_from=tmp_path / "base", progress=False)
    assert ckpt.load(tmp_path / "ft").vocab == ckpt.load(tmp_path / "base").vocab
    assert math.isfinite(res.best_val_loss)
    new = tmp_path / "new.txt"
    new.write_text("one two six! zebra\n" * 50)
    train(tiny_config(new, max_steps=10), tmp_path / "ft2", init_from=tmp_path / "base", progress=False)
    base, grown = ckpt.load(tmp_path / "base").vocab, ckpt.load(tmp_path / "ft2").vocab
    assert set(grown.codes.tolist()) - set(base.codes.tolist()) == {ord(c) for c in "!absxz"}  # (tests/test_grow.py)


def test_max_time_stops_the_run(text_file, tmp_path):
    import time

    t0 = time.perf_counter()
    res = train(tiny_config(text_file, max_steps=0, max_time=1.5), tmp_path / "run", progress=False)
    took = time.perf_counter() - t0
    assert res.stopped_by == "max-time" and res.steps > 0
    elapsed = ckpt.load(tmp_path / "run", "last").meta["elapsed"]
    assert 1.5 <= elapsed < 3.0 and took < 20  # stopped at its budget, not long after


@pytest.mark.parametrize("text,seconds", [("90", 90), ("60s", 60), ("10m", 600), ("1h30m", 5400), ("1.5h", 5400),
                                          ("2m30s", 150), ("0", 0)])
def test_durations_mean_what_they_say(text, seconds):
    from charnn.cli.args import duration

    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["10x", "m", "1m2", "", "-5m", "1h 30m"])
def test_bad_durations_are_refused(text):
    import argparse

    from charnn.cli.args import duration

    with pytest.raises(argparse.ArgumentTypeError, match="invalid duration"):
        duration(text)


def test_patience_stops_a_stalled_run(text_file, tmp_path):
    res = train(tiny_config(text_file, max_steps=2000, lr=1e-9, eval_every=5, patience=2, warmup_steps=0,
                            schedule="constant"), tmp_path / "run", progress=False)
    assert res.stopped_by == "patience" and res.steps < 2000


def test_divergence_never_reaches_disk_and_a_lower_lr_resumes(text_file, tmp_path, monkeypatch):
    # Good for 60 steps (two evaluations save good checkpoints), then the loss turns NaN at step 66.
    good = train(tiny_config(text_file, max_steps=60, eval_every=30), tmp_path / "run", progress=False)
    assert good.steps == 60
    before = {n: (tmp_path / "run" / n).read_bytes() for n in ("last.safetensors", "best.safetensors")}
    from charnn import trainer as train_module

    calls = []
    real = train_module._Loss.forward

    def poisoned(self, x, y, state):
        loss, state = real(self, x, y, state)
        calls.append(1)
        return (loss * float("nan") if len(calls) >= 6 else loss), state

    monkeypatch.setattr(train_module._Loss, "forward", poisoned)
    with pytest.raises(CharnnError, match=r"training diverged at step 66 \(loss nan\); last.safetensors still holds "
                                          r"step 60; continue with a lower --lr"):
        train(None, tmp_path / "run", resume=True, progress=False, overrides={"max_steps": 200})
    monkeypatch.setattr(train_module._Loss, "forward", real)
    for n, b in before.items():  # neither checkpoint was touched, and both still load and sample
        assert (tmp_path / "run" / n).read_bytes() == b, n
    res = train(None, tmp_path / "run", resume=True, progress=False, overrides={"max_steps": 90, "lr": 1e-3})
    assert res.steps == 90 and math.isfinite(res.last_val_loss)
    with pytest.raises(CharnnError, match="these differ from it: --lr"):  # raising it is not a way out
        train(None, tmp_path / "run", resume=True, progress=False, overrides={"lr": 1.0})


def test_divergence_from_the_start_keeps_a_good_checkpoint(text_file, tmp_path):
    with pytest.raises(CharnnError, match=r"training diverged at step (\d+) \((loss|validation loss) (nan|inf|"
                                          r"\d\S*e\+\d+)\); last.safetensors still holds step (\d+);") as e:
        train(tiny_config(text_file, max_steps=200, lr=1e6, grad_clip=0, schedule="constant", warmup_steps=0,
                          eval_every=2), tmp_path / "run", progress=False)
    kept = int(re.search(r"still holds step (\d+)", str(e.value)).group(1))
    loaded = ckpt.load(tmp_path / "run", "last")
    assert loaded.meta["step"] == kept and all(torch.isfinite(w).all() for w in loaded.weights.values())
    from charnn.sample import sample_text

    assert len(sample_text(loaded.build_model(), loaded.vocab, length=50)[0]) == 50  # it still samples


def test_rmsprop_epoch_decay_and_clamp_train(text_file, tmp_path):
    cfg = tiny_config(text_file, max_steps=150, optimizer="rmsprop", schedule="epoch-decay", lr=3e-3,
                      grad_clamp=5.0, grad_clip=0.0, decay_after_epochs=1)
    res = train(cfg, tmp_path / "run", progress=False)
    assert res.best_val_loss < 1.6


def test_learning_rate_schedules():
    cfg = RunConfig(train=TrainConfig(lr=1.0, warmup_steps=10, min_lr_frac=0.1))
    assert lr_at(cfg, 0, 0, 0.0) == pytest.approx(0.1)  # warming up
    assert lr_at(cfg, 9, 0, 0.0) == pytest.approx(1.0)
    assert lr_at(cfg, 500, 0, 0.5) == pytest.approx(0.55)  # half-way down the cosine
    assert lr_at(cfg, 1000, 0, 1.0) == pytest.approx(0.1)
    cfg.train.schedule, cfg.train.decay_after_epochs, cfg.train.decay_rate = "epoch-decay", 2, 0.5
    assert [lr_at(cfg, 100, e, 0) for e in (0.5, 1.5, 2.0, 3.2)] == pytest.approx([1.0, 1.0, 0.5, 0.25])


def test_bf16_autocast_learns_like_fp32_and_keeps_an_fp32_state_and_resumes_exactly(text_file, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from charnn import trainer as train_module

    fp32 = train(tiny_config(text_file, max_steps=80), tmp_path / "a", progress=False)
    cfg = tiny_config(text_file, max_steps=80)
    cfg.train.precision = "bf16"
    entered = []
    real = train_module.torch.autocast

    def spy(device_type, dtype=None, enabled=True, **kw):
        entered.append((device_type, dtype, enabled))
        return real(device_type, dtype=dtype, enabled=enabled, **kw)

    monkeypatch.setattr(train_module.torch, "autocast", spy)
    bf16 = train(cfg, tmp_path / "b", progress=False)
    # every step ran under bf16 autocast, the recurrence too on this CPU (no autocast switched off inside)
    assert entered.count(("cpu", torch.bfloat16, True)) == 80 and len(entered) == 80
    a, b = load_file(tmp_path / "a" / "last.safetensors"), load_file(tmp_path / "b" / "last.safetensors")
    assert not torch.equal(a["model.head.weight"], b["model.head.weight"])  # bf16 rounding changed the run
    # ... but it learns as well
    assert bf16.best_val_loss < 1.0 and abs(bf16.best_val_loss - fp32.best_val_loss) < 0.1
    assert b["state.h"].dtype == torch.float32 and b["state.c"].dtype == torch.float32
    monkeypatch.undo()
    cfg = tiny_config(text_file, max_steps=80)
    cfg.train.precision = "bf16"
    first = train(cfg, tmp_path / "c", progress=False, on_step=lambda s: s >= 37)  # killed at 37, resumed
    assert first.stopped_by == "interrupt"
    train(None, tmp_path / "c", resume=True, progress=False)
    c = load_file(tmp_path / "c" / "last.safetensors")
    assert all(torch.equal(b[k], c[k]) for k in b if k.startswith(("model.", "state.")))


def test_snapshots_record_how_novel_their_text_is(text_file, tmp_path):
    train(tiny_config(text_file, max_steps=100, eval_every=50), tmp_path / "run", progress=False)
    snaps = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in snaps] == [50, 100]
    for s in snaps:
        assert 0.0 <= s["novel_10"] <= 1.0 and 0.0 <= s["novel_20"] <= 1.0 and 0.0 <= s["known_words"] <= 1.0
    # this corpus is a handful of counting phrases: a model that learned it writes known words,
    # more of them as it learns (0.89-0.94 at step 100 over seeds 0-2, since the embedding cap)
    assert snaps[-1]["known_words"] > 0.85
    assert snaps[-1]["known_words"] > snaps[0]["known_words"]


def test_snapshot_novelty_is_zero_for_copied_text_and_one_for_new_text():
    from charnn.samplestats import SubstringIndex, snapshot_metrics

    train_text = learnable_text()
    index, words = SubstringIndex(train_text), {"one", "two", "three", "four", "five"}
    copied = snapshot_metrics("\n".join(train_text.splitlines()[10:40]), index, words)  # whole lines
    assert copied["novel_10"] == 0.0 and copied["novel_20"] == 0.0 and copied["known_words"] == 1.0
    new = snapshot_metrics("zebra quokka yak " * 10, index, words)
    assert new["novel_10"] == 1.0 and new["novel_20"] == 1.0 and new["known_words"] == 0.0
    # a sample that copies a 20-character piece: its 20-character pieces are partly not new
    mixed = snapshot_metrics("zebra quokka yak " + train_text[:40] + " zebra quokka", index, words)
    assert 0.0 < mixed["novel_20"] < 1.0 and mixed["novel_10"] < mixed["novel_20"]


@pytest.mark.slow
def test_compiled_training_step_computes_the_same_run(text_file, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    plain = train(tiny_config(text_file, max_steps=6, eval_every=6), tmp_path / "a", progress=False)
    cfg = tiny_config(text_file, max_steps=6, eval_every=6)
    cfg.train.compile = True
    from charnn import trainer as train_module

    compiled_modules = []
    real = train_module.torch.compile
    monkeypatch.setattr(train_module.torch, "compile", lambda m, **kw: (compiled_modules.append(m), real(m, **kw))[1])
    compiled = train(cfg, tmp_path / "b", progress=False)
    assert len(compiled_modules) == 1 and isinstance(compiled_modules[0], train_module._Loss)  # it was compiled
    assert compiled.last_val_loss == pytest.approx(plain.last_val_loss, abs=1e-4)
    a, b = load_file(tmp_path / "a" / "last.safetensors"), load_file(tmp_path / "b" / "last.safetensors")
    for k in a:
        if k.startswith("model."):  # same parameter names: the checkpoint stores the model, not the wrapper
            torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-4)


def test_an_embedding_wider_than_the_vocabulary_is_capped_and_says_so(text_file, tmp_path, capsys):
    cfg = tiny_config(text_file, max_steps=30)
    cfg.model.embed = 64  # the counting corpus has 14 symbols
    train(cfg, tmp_path / "run", progress=False)
    err = capsys.readouterr().err
    assert "embedding is 14 wide, not 64" in err
    saved = ckpt.load(tmp_path / "run", "best")
    assert saved.config.model.embed == 14 and saved.weights["embed.weight"].shape == (14, 14)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["embed"] == 14
    # a resume continues the saved shape (and says nothing about it)
    train(RunConfig(), tmp_path / "run", resume=True, overrides={"max_steps": 40}, progress=False)
    assert "embedding is" not in capsys.readouterr().err
    assert ckpt.load(tmp_path / "run", "last").meta["step"] == 40
    # an embedding narrower than the vocabulary is kept
    cfg = tiny_config(text_file, max_steps=2)
    cfg.model.embed = 5
    train(cfg, tmp_path / "narrow", progress=False)
    assert ckpt.load(tmp_path / "narrow", "best").config.model.embed == 5


def test_adamw_runs_fused_on_the_cpu_and_rmsprop_multi_tensor():
    from charnn.model import CharRNN
    from charnn.trainer import make_optimizer

    cfg = RunConfig()
    cfg.model.vocab_size, cfg.model.hidden = 10, 8
    model = CharRNN(cfg.model)
    assert make_optimizer(cfg, model).param_groups[0]["fused"] is True
    cfg.train.optimizer = "rmsprop"
    assert make_optimizer(cfg, model).param_groups[0]["foreach"] is True



def test_one_trainer_per_run(text_file, tmp_path):
    import os
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "charnn", "train", str(text_file), "--out", str(tmp_path / "run"), "--preset", "tiny",
           "--threads", "1", "--max-steps", "1000000", "--quiet", "--samples", "0"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    try:
        deadline = time.time() + 60
        while not (tmp_path / "run" / "last.safetensors").exists() and time.time() < deadline:
            time.sleep(0.1)
        before = (tmp_path / "run" / "config.json").read_bytes()
        with pytest.raises(CharnnError, match=rf"is being trained by another process \(PID {p.pid}\)"):
            train(tiny_config(text_file, max_steps=5), tmp_path / "run", progress=False)
        with pytest.raises(CharnnError, match=rf"PID {p.pid}"):
            train(None, tmp_path / "run", resume=True, progress=False)
        assert (tmp_path / "run" / "config.json").read_bytes() == before
    finally:
        p.kill()
        p.wait()
    # the lock died with its process: the run resumes
    res = train(None, tmp_path / "run", resume=True, progress=False, overrides={"max_steps": 3})
    assert res.steps >= 0 and (tmp_path / "run" / "last.safetensors").exists()


def test_a_checkpoint_from_another_run_is_never_resumed(text_file, tmp_path):
    train(tiny_config(text_file, max_steps=10), tmp_path / "a", progress=False)
    train(tiny_config(text_file, max_steps=20), tmp_path / "b", progress=False)
    best = (tmp_path / "a" / "best.safetensors").read_bytes()
    (tmp_path / "a" / "last.safetensors").write_bytes((tmp_path / "b" / "last.safetensors").read_bytes())
    with pytest.raises(CharnnError, match=r"last.safetensors belongs to another run \(run id \w+; this directory's "
                                          r"run is \w+\)"):
        train(None, tmp_path / "a", resume=True, progress=False, overrides={"max_steps": 30})
    assert (tmp_path / "a" / "best.safetensors").read_bytes() == best


def test_check_resume_accepts_what_was_given_again():
    from charnn.trainer import check_resume

    saved = RunConfig()
    saved.data.text = "/x/t.txt"
    saved.preset = "tiny"
    same = check_resume(saved, {"text": "/x/t.txt", "preset": "tiny", "hidden": saved.model.hidden,
                                "split": list(saved.data.split), "max_steps": 99, "lr": saved.train.lr / 2}, {})
    assert same.train.max_steps == 99 and same.train.lr == saved.train.lr / 2 and same.model == saved.model
    with pytest.raises(CharnnError, match=r"--cell \(saved lstm, given gru\); --text \(saved /x/t.txt, given /y.txt\)"):
        check_resume(saved, {"text": "/y.txt", "cell": "gru"}, {})


def test_evaluation_during_training_reads_at_most_eval_chars(text_file, tmp_path, monkeypatch):
    from charnn import trainer as train_module

    assert TrainConfig().eval_chars == 2_000_000
    seen = []
    real = train_module.evaluate
    monkeypatch.setattr(train_module, "evaluate", lambda *a, **k: (seen.append(k.get("max_chars", 0)), real(*a, **k))[1])
    cfg = tiny_config(text_file, max_steps=20, eval_every=10, eval_chars=100)
    cfg.data.split = (0.5, 0.5, 0.0)
    train(cfg, tmp_path / "run", progress=False)
    assert seen == [100, 100, 0]  # two evaluations, then the end-of-run report over the whole split
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in m for m in metrics)
    score = real(ckpt.load(tmp_path / "run").build_model(), (np.arange(5000) % 5).astype(np.int64), max_chars=100)
    assert score.chars == 100


@pytest.mark.parametrize("every,eval_every,expected", [
    (0.0, 1000, [0, 12]),            # only the step-0 save and the end
    (0.0, 5, [0, 5, 10, 12]),        # ... and every evaluation
    (1e-9, 1000, list(range(13)) + [12]),  # a save is due after every step
])
def test_last_checkpoint_is_saved_at_start_evaluations_and_every_interval(text_file, tmp_path, monkeypatch,
                                                                          every, eval_every, expected):
    saved = []
    real = ckpt.save

    def spy(path, cfg, vocab, model, meta, extra=None):
        if path.name == ckpt.LAST:
            saved.append(meta["step"])
        return real(path, cfg, vocab, model, meta, extra)

    monkeypatch.setattr(ckpt, "save", spy)
    train(tiny_config(text_file, max_steps=12, eval_every=eval_every, checkpoint_seconds=every), tmp_path / "r",
          progress=False)
    assert saved == expected


def test_the_training_step_reads_nothing_back_from_the_device_between_log_steps(text_file, tmp_path, monkeypatch):
    """.item() / .tolist() / .cpu() stall a GPU: between steps 11 and 39 (no evaluation, snapshot or
    save there) the loop may read back only at its log steps, 20 and 30, once each."""
    calls = {"item": 0, "tolist": 0, "cpu": 0}
    for name in calls:
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    marks = {}

    def on_step(step):
        if step in (11, 39):
            marks[step] = dict(calls)
        return False

    cfg = tiny_config(text_file, max_steps=45, eval_every=1000, checkpoint_seconds=0)
    cfg.train.snapshot_steps = ()
    train(cfg, tmp_path / "run", progress=False, on_step=on_step)
    between = {k: marks[39][k] - marks[11][k] for k in calls}
    assert between == {"item": 0, "tolist": 2, "cpu": 0}, between


def test_kept_steps_are_the_snapshots_then_each_doubling_and_every_n():
    from charnn.trainer import keep_step

    t = TrainConfig()
    assert [s for s in range(1, 40_000) if keep_step(t, s)] == [100, 300, 500, 700, 1200, 2000, 4000, 8000, 16000,
                                                                32000]
    t.keep_every = 5000
    assert [s for s in range(1, 21_000) if keep_step(t, s)] == [100, 300, 500, 700, 1200, 2000, 4000, 5000, 8000,
                                                                10000, 15000, 16000, 20000]
    t.keep_checkpoints = "none"
    assert [s for s in range(1, 21_000) if keep_step(t, s)] == [5000, 10000, 15000, 20000]


def _kept_config(text_file):
    c = tiny_config(text_file, max_steps=45, eval_every=15, checkpoint_seconds=0)
    c.train.snapshot_steps = (5, 10)  # then 20, 40
    return c


def test_kept_checkpoints_are_weights_enough_to_sample_and_survive_a_crash_consistently(text_file, tmp_path):
    whole = tmp_path / "whole"
    train(_kept_config(text_file), whole, progress=False)
    assert ckpt.kept_steps(whole) == [5, 10, 20, 40]
    kept = ckpt.load(whole, "step:20")
    assert kept.meta["step"] == 20 and kept.tensors == {}  # weights only: no optimizer or RNG state
    assert kept.build_model().num_params == ckpt.load(whole).build_model().num_params

    # a crash at step 22: the last full save was at step 15 (an evaluation), after the kept step 20
    def crash(step):
        if step == 22:
            raise RuntimeError("power cut")
        return False

    split = tmp_path / "split"
    with pytest.raises(RuntimeError):
        train(_kept_config(text_file), split, progress=False, on_step=crash)
    assert ckpt.kept_steps(split) == [5, 10, 20] and ckpt.load(split, "last").meta["step"] == 15
    train(None, split, resume=True, progress=False)
    assert ckpt.kept_steps(split) == ckpt.kept_steps(whole)
    for step in ckpt.kept_steps(whole):
        a, b = ckpt.load(whole, f"step:{step}").weights, ckpt.load(split, f"step:{step}").weights
        assert all(torch.equal(a[k], b[k]) for k in a), step


def test_keep_checkpoints_none_keeps_nothing_and_a_step_not_kept_lists_the_kept_ones(text_file, tmp_path):
    c = _kept_config(text_file)
    c.train.keep_checkpoints = "none"
    train(c, tmp_path / "none", progress=False)
    assert ckpt.kept_steps(tmp_path / "none") == [] and not (tmp_path / "none" / ckpt.KEPT).exists()
    train(_kept_config(text_file), tmp_path / "run", progress=False)
    with pytest.raises(CharnnError, match="kept no checkpoint at step 7; it kept steps 5, 10, 20, 40"):
        ckpt.load(tmp_path / "run", "step:7")
    with pytest.raises(CharnnError, match="kept none"):
        ckpt.load(tmp_path / "none", "step:5")


def test_ema_evaluates_and_keeps_the_averaged_weights_and_resumes_bit_identically(text_file, tmp_path):
    from charnn.evaluate import evaluate, model_text

    def cfg():
        c = tiny_config(text_file, max_steps=40, eval_every=15, ema=0.9)
        c.train.snapshot_steps = (20,)
        return c

    train(cfg(), tmp_path / "whole", progress=False)
    last, best = ckpt.load(tmp_path / "whole", "last"), ckpt.load(tmp_path / "whole", "best")
    raw = last.weights
    avg = {k[4:]: v for k, v in last.tensors.items() if k.startswith("ema.")}
    assert set(avg) == set(raw) and any(not torch.equal(avg[k], raw[k]) for k in raw)
    # the best checkpoint holds the average, and its recorded loss is the average's
    val = model_text(best, split="val").ids
    got = evaluate(best.build_model(), val, seq_len=64).loss
    assert got == pytest.approx(best.meta["val_loss"], abs=1e-6)
    # stop and resume: the average is saved and restored exactly
    train(cfg(), tmp_path / "split", progress=False, on_step=lambda s: s >= 23)
    train(None, tmp_path / "split", resume=True, progress=False)
    a, b = ckpt.load(tmp_path / "whole", "last"), ckpt.load(tmp_path / "split", "last")
    for k in a.tensors:
        if k.startswith("ema."):
            assert torch.equal(a.tensors[k], b.tensors[k]), k
    assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
    assert ckpt.load(tmp_path / "split", "best").meta["val_loss"] == best.meta["val_loss"]


@pytest.mark.parametrize("device", ["cpu", "mps"])  # the foreach path, and the per-tensor one (MPS's)
def test_the_weight_average_after_k_steps_is_its_closed_form(device):
    """--ema: e_s = d_s e_(s-1) + (1 - d_s) w_s with d_s = min(decay, (1 + s) / (10 + s)). With the
    weights held at W from step 1 on, e_k = W + (e_0 - W) * prod(d_1..d_k): the old weights' share
    shrinks by d each step (taking d of the new weights instead would shrink it by 1 - d)."""
    from charnn.trainer import WeightAverage

    start, held = torch.tensor([1.0, -2.0, 4.0]), torch.tensor([0.5, 0.5, -1.0])
    model = torch.nn.Linear(1, 3, bias=False)
    for steps in (range(1, 6), range(500, 530)):  # while the decay ramps up, then at its cap
        with torch.no_grad():
            model.weight.copy_(start[:, None])
        avg = WeightAverage(model, 0.95, device)
        assert avg.foreach == (device == "cpu")
        with torch.no_grad():
            model.weight.copy_(held[:, None])
        share = 1.0
        for step in steps:
            avg.update(step)
            share *= min(0.95, (1 + step) / (10 + step))
            assert torch.allclose(avg.values[0][:, 0], held + (start - held) * share, rtol=1e-5, atol=1e-7), step
        assert share > 1e-3
        with avg.swapped_in():  # the model reads the average inside, its own weights after
            assert torch.equal(model.weight, avg.values[0])
        assert torch.equal(model.weight[:, 0], held)


def test_a_config_trains_the_same_run_twice(text_file, tmp_path):
    """The trainer fills in its own copy of the configuration (the embedding fitted to the
    vocabulary, the run id), so the caller's config starts the same run again."""
    from safetensors.torch import load_file

    cfg = tiny_config(text_file, max_steps=15)
    asked = cfg.to_json()
    train(cfg, tmp_path / "a", progress=False)
    assert cfg.to_json() == asked
    train(cfg, tmp_path / "b", progress=False)
    a, b = load_file(tmp_path / "a" / "last.safetensors"), load_file(tmp_path / "b" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))


def test_validate_only_checks_and_complete_fills_in_the_defaults():
    """RunConfig.validate() changes nothing (a check may be run twice, on anything); complete()
    is the one step that fills in a default or tidies a loose form, and a run does both."""
    import copy

    from charnn.config import DEFAULT_BPE_VOCAB

    cfg = RunConfig()
    cfg.data.unit, cfg.data.split, cfg.train.snapshot_steps = "bpe", [0.8, 0.1, 0.1], [10, 20]
    before = copy.deepcopy(cfg)
    assert cfg.validate() is cfg and cfg == before  # nothing filled in by checking
    cfg.complete()
    assert cfg.data.bpe_vocab == DEFAULT_BPE_VOCAB
    assert cfg.data.split == (0.8, 0.1, 0.1) and cfg.train.snapshot_steps == (10, 20)
    cfg.data.bpe_vocab = 1
    with pytest.raises(CharnnError, match="--bpe-vocab must be between 2"):
        cfg.validate()
    cfg.data.bpe_vocab, cfg.train.snapshot_steps = 0, (10, 2.5)
    with pytest.raises(CharnnError, match="snapshot_steps must be whole numbers"):
        cfg.validate()


def test_a_run_saved_before_a_setting_was_renamed_still_loads_and_messages_name_the_flag():
    """checkpoint_every became checkpoint_seconds (it counts seconds, beside eval_every's steps): a
    config.json written with the old name loads with its value, and a bad value is reported under
    the flag a user types (--checkpoint-every), not the field's name."""
    old = RunConfig().to_dict()
    old["train"]["checkpoint_every"] = old["train"].pop("checkpoint_seconds") * 0 + 42.0
    assert RunConfig.from_dict(old).train.checkpoint_seconds == 42.0
    cfg = RunConfig()
    cfg.train.checkpoint_seconds = -1
    with pytest.raises(CharnnError, match="^--checkpoint-every must not be negative"):
        cfg.validate()
