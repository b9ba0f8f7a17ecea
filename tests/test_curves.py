"""--tensorboard: the run's curves and samples read back from the event files equal its logs,
and a run killed after its last checkpoint and resumed shows every step once."""

import json
import math

import pytest

from charnn.errors import CharnnError
from charnn.trainer import train
from helpers import tiny_config

pytest.importorskip("tensorboard")


class Killed(BaseException):
    """Stands for SIGKILL: the loop stops where it is, nothing more is saved."""


def _read(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    texts = {e.step: e.tensor_proto.string_val[0].decode() for e in acc.Tensors("samples/text_summary")} \
        if "samples/text_summary" in acc.Tags()["tensors"] else {}
    return scalars, texts


def _metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_curves_equal_the_logs(text_file, tmp_path):
    cfg = tiny_config(text_file, max_steps=40, eval_every=20, tensorboard=True, snapshot_steps=(20,))
    train(cfg, tmp_path / "run", progress=False)
    scalars, texts = _read(tmp_path / "run")
    logs = _metrics(tmp_path / "run")
    want_train = [(m["step"], m["train_loss"]) for m in logs if "train_loss" in m]
    assert [s for s, _ in scalars["loss/train"]] == [s for s, _ in want_train] == [10, 20, 30, 40]
    assert [v for _, v in scalars["loss/train"]] == pytest.approx([v for _, v in want_train], rel=1e-6)
    assert [v for _, v in scalars["bpc/train"]] == pytest.approx([v / math.log(2) for _, v in want_train], rel=1e-6)
    val = [(m["step"], m["val_loss"]) for m in logs if "val_loss" in m]
    assert [s for s, _ in scalars["loss/val"]] == [s for s, _ in val] == [20, 40]
    assert [v for _, v in scalars["loss/val"]] == pytest.approx([v for _, v in val], rel=1e-6)
    assert [s for s, _ in scalars["bpc/val"]] == [20, 40]
    assert [v for _, v in scalars["lr"]] == pytest.approx([m["lr"] for m in logs if "lr" in m], rel=1e-6)
    norms = [v for _, v in scalars["grad_norm"]]
    assert len(norms) == 4 and all(v > 0 for v in norms)
    assert all(v > 0 for _, v in scalars["speed/units_per_s"])
    samples = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert list(texts) == [s["step"] for s in samples] == [20, 40]  # a snapshot at each evaluation
    assert all(s["text"] in texts[s["step"]] for s in samples)


def test_a_resumed_run_shows_every_step_once(text_file, tmp_path):
    cfg = tiny_config(text_file, max_steps=80, eval_every=20, tensorboard=True, snapshot_steps=())
    cfg.train.checkpoint_seconds = 0  # saves only at evaluations: the kill at 55 loses steps 41-55

    def kill(step):
        if step == 55:
            raise Killed

    with pytest.raises(Killed):
        train(cfg, tmp_path / "run", progress=False, on_step=kill)
    before, _ = _read(tmp_path / "run")
    assert [s for s, _ in before["loss/train"]] == [10, 20, 30, 40, 50]  # 50 belongs to the lost future
    lost = dict(before["loss/train"])[50]
    train(None, tmp_path / "run", resume=True, overrides={}, progress=False)
    after, _ = _read(tmp_path / "run")
    assert [s for s, _ in after["loss/train"]] == [10, 20, 30, 40, 50, 60, 70, 80]
    assert [s for s, _ in after["loss/val"]] == [20, 40, 60, 80]
    logs = {m["step"]: m["train_loss"] for m in _metrics(tmp_path / "run") if "train_loss" in m}
    assert dict(after["loss/train"])[50] == pytest.approx(logs[50], rel=1e-6)  # the resumed run's step 50
    assert dict(after["loss/train"])[50] == pytest.approx(lost, rel=1e-6)  # ... which is the lost one, exactly


def test_tensorboard_missing_is_one_line_before_anything_is_written(text_file, tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_tensorboard(name, *a, **k):
        if name == "tensorboard" or name.startswith("tensorboard."):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(CharnnError, match="pip install tensorboard"):
        train(tiny_config(text_file, max_steps=5, tensorboard=True), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "config.json").exists()
