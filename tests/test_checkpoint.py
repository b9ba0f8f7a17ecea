import json
import os
from pathlib import Path

import pytest
import torch

from charnn import checkpoint as ckpt
from charnn.config import ModelConfig, RunConfig
from charnn.errors import CharnnError
from charnn.model import CharRNN
from charnn.vocab import Vocab


def setup(tmp_path):
    cfg = RunConfig(model=ModelConfig(cell="lstm", layers=2, hidden=8, embed=4, vocab_size=5))
    vocab = Vocab([ord(c) for c in "abcde"])
    torch.manual_seed(0)
    return cfg, vocab, CharRNN(cfg.model)


def test_round_trip_is_exact_and_self_contained(tmp_path):
    cfg, vocab, model = setup(tmp_path)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.zeros(2, 3, dtype=torch.long))[0].sum().backward()
    opt.step()
    tensors, js = ckpt.optimizer_to_tensors(opt)
    ckpt.save(tmp_path / "x.safetensors", cfg, vocab, model, {"step": 3, "optimizer": js}, tensors)
    loaded = ckpt.load(tmp_path / "x.safetensors")
    assert loaded.vocab == vocab and loaded.meta["step"] == 3
    m2 = loaded.build_model()
    for (n, a), (_, b) in zip(model.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), n
    opt2 = torch.optim.AdamW(m2.parameters(), lr=0.1)
    ckpt.optimizer_from_tensors(opt2, loaded.tensors, loaded.meta["optimizer"])
    for p1, p2 in zip(model.parameters(), m2.parameters()):
        s1, s2 = opt.state[p1], opt2.state[p2]
        assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not list(tmp_path.glob(".*tmp"))  # written via a temporary name, renamed into place


def test_loading_never_unpickles(tmp_path):
    bad = tmp_path / "evil.safetensors"
    import pickle

    bad.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CharnnError, match="cannot read checkpoint"):
        ckpt.load(bad)


def test_foreign_safetensors_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CharnnError, match="not a charnn checkpoint"):
        ckpt.load(tmp_path / "other.safetensors")


def test_missing_run_and_empty_run(tmp_path):
    with pytest.raises(CharnnError, match="no such run directory"):
        ckpt.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CharnnError, match="holds no checkpoint"):
        ckpt.load(tmp_path / "empty")


def test_checkpoint_metadata_is_plain_json(tmp_path):
    cfg, vocab, model = setup(tmp_path)
    ckpt.save(tmp_path / "x.safetensors", cfg, vocab, model, {"step": 1})
    from safetensors import safe_open

    with safe_open(str(tmp_path / "x.safetensors"), "pt") as f:
        md = f.metadata()
    assert json.loads(md["config"])["model"]["hidden"] == 8
    assert json.loads(md["vocab"])["chars"] == "abcde"


def _header_len(path) -> int:
    import struct

    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_a_changed_byte_or_a_cut_file_is_refused(tmp_path):
    cfg, vocab, model = setup(tmp_path)
    path = tmp_path / "x.safetensors"
    ckpt.save(path, cfg, vocab, model, {"step": 1})
    good = path.read_bytes()
    start = _header_len(path)
    for offset in (start, start + (len(good) - start) // 2, len(good) - 1):  # first, middle, last tensor byte
        flipped = bytearray(good)
        flipped[offset] ^= 0x01
        path.write_bytes(bytes(flipped))
        with pytest.raises(CharnnError, match=r"x.safetensors is damaged: its tensors do not match the checksum"):
            ckpt.load(path)
    path.write_bytes(good[: len(good) - 100])
    with pytest.raises(CharnnError, match="it is damaged, cut short or not a checkpoint"):
        ckpt.load(path)
    path.write_bytes(good)
    assert ckpt.load(path).meta["step"] == 1


def _rewrite_config(path, **model):
    """A checkpoint whose metadata claims another model, its tensors unchanged (a crafted file)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        md, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    c = json.loads(md["config"])
    c["model"].update(model)
    md["config"] = json.dumps(c)
    save_file(tensors, str(path), metadata=md)


@pytest.mark.parametrize("hidden", [6000, 10**9])
def test_a_crafted_header_is_refused_before_allocating(tmp_path, monkeypatch, hidden):
    cfg, vocab, model = setup(tmp_path)
    path = tmp_path / "x.safetensors"
    ckpt.save(path, cfg, vocab, model, {"step": 1})
    _rewrite_config(path, hidden=hidden)
    built = []
    monkeypatch.setattr(ckpt, "build", lambda *a, **k: built.append(a))
    with pytest.raises(CharnnError, match=rf"do not fit its own configuration \(lstm 2x{hidden}.*"
                                          r"rnn.weight_ih_l0 is \(32, 4\), the configuration needs"):
        ckpt.load(path).build_model()
    assert built == []  # refused from the shapes alone: no model of that size was ever built


def test_non_finite_weights_are_refused(tmp_path):
    cfg, vocab, model = setup(tmp_path)
    with torch.no_grad():
        model.head.bias[0] = float("nan")
    ckpt.save(tmp_path / "x.safetensors", cfg, vocab, model, {"step": 1})
    with pytest.raises(CharnnError, match=r"holds non-finite weights \(NaN or inf in head.bias\)"):
        ckpt.load(tmp_path / "x.safetensors").build_model()


def test_files_are_written_with_the_usual_permissions(tmp_path):
    cfg, vocab, model = setup(tmp_path)
    old = os.umask(0o022)
    try:
        ckpt.save(tmp_path / "x.safetensors", cfg, vocab, model, {"step": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "x.safetensors").stat().st_mode & 0o777 == 0o644


def test_a_checkpoint_write_goes_through_a_durable_rename(tmp_path, monkeypatch):
    """The file appears only by os.replace of a complete, fsynced temporary file."""
    from charnn import files

    cfg, vocab, model = setup(tmp_path)
    events = []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])

    def replace(src, dst):
        events.append(("replace", Path(src).name, Path(dst).name, Path(src).stat().st_size))
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    ckpt.save(tmp_path / "x.safetensors", cfg, vocab, model, {"step": 1})
    size = (tmp_path / "x.safetensors").stat().st_size
    assert events == ["fsync", ("replace", ".x.safetensors.tmp", "x.safetensors", size), "fsync"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    """A write that fails (here: the size limit of RLIMIT_FSIZE, as on a full disk) is one line,
    leaves no temporary file and the previous checkpoint as it was."""
    import subprocess
    import sys

    cfg, vocab, model = setup(tmp_path)
    path = tmp_path / "x.safetensors"
    ckpt.save(path, cfg, vocab, model, {"step": 1})
    before = path.read_bytes()
    code = (f"import resource, torch; from charnn import checkpoint as c; from charnn.files import write_atomic\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
            f"from charnn.errors import CharnnError\n"
            f"try:\n    write_atomic({str(path)!r}, b'x' * 5000)\n"
            f"except CharnnError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "cannot write" in r.stdout and "(the previous one is kept)" in r.stdout and "File too large" in r.stdout
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_check_run_says_what_is_usable(tmp_path):
    cfg, vocab, model = setup(tmp_path)
    cfg.run_id = "abc"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(cfg.to_json())
    opt = torch.optim.AdamW(model.parameters())
    t, js = ckpt.optimizer_to_tensors(opt)
    ckpt.save(run / ckpt.LAST, cfg, vocab, model, {"step": 7, "optimizer": js}, t)
    ckpt.save(run / ckpt.BEST, cfg, vocab, model, {"step": 5, "val_loss": 1.5})
    found = {f.name: f for f in ckpt.check_run(run)}
    assert all(f.ok for f in found.values()) and "step 7; resume with" in found[ckpt.LAST].says
    data = bytearray((run / ckpt.BEST).read_bytes())
    data[-1] ^= 0xFF
    (run / ckpt.BEST).write_bytes(bytes(data))
    cfg.run_id = "other"
    ckpt.save(run / ckpt.LAST, cfg, vocab, model, {"step": 7, "optimizer": js}, t)
    found = {f.name: f for f in ckpt.check_run(run)}
    assert not found[ckpt.BEST].ok and "is damaged" in found[ckpt.BEST].says
    assert found[ckpt.LAST].ok and not found["run id"].ok and "different runs" in found["run id"].says
