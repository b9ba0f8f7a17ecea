import json

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
