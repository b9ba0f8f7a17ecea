"""charnn export: the web page (opened from disk in chromium) and the ONNX step (onnxruntime),
each against PyTorch."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import cache_at, learnable_text, tiny_config
from helpers import train_runs

from charnn.config import ModelConfig
from charnn.web.export import export_web, reference_logits

TEXT = "one two three.\none two.\nfour"


def _charnn(*args):
    return subprocess.run([sys.executable, "-m", "charnn", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONUNBUFFERED="1"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """lstm (2 layers), gru, a plain tanh rnn that reads bytes, and a transformer whose block (16)
    the greedy sample outgrows many times (so the page's window slides as PyTorch's does)."""
    from charnn.trainer import train

    d = train_runs(tmp_path_factory.mktemp("export"))
    with cache_at(d / "cache"):
        (d / "bytes.txt").write_text(learnable_text() + "na\u00efve caf\u00e9\n", encoding="utf-8")
        cfg = tiny_config(d / "bytes.txt", max_steps=30, eval_every=30)
        cfg.model.cell, cfg.data.unit = "rnn", "bytes"
        train(cfg, d / "rnn", progress=False)
        cfg = tiny_config(d / "text.txt", max_steps=60, eval_every=30)
        cfg.model = ModelConfig(cell="transformer", layers=2, heads=2, embed=16, hidden=16, block=16)
        cfg.train.seq_len = 16
        train(cfg, d / "gpt", progress=False)
        return d


def _open(browser, index, fragment=""):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith("file:") else errors.append(f"network request {r.url}"))
    page.goto(index.resolve().as_uri() + fragment)
    return page, errors


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lstm", "gru", "rnn", "gpt"])
def test_the_page_opened_from_disk_computes_pytorchs_logits_and_its_greedy_sample(browser, runs, tmp_path, name):
    r = _charnn("export", runs / name, "--out", tmp_path / "web")
    assert r.returncode == 0, r.stderr
    index = tmp_path / "web" / "index.html"
    assert {p.name for p in (tmp_path / "web").iterdir()} == {"index.html", "model.js", "model.json", "weights.bin"}
    page, errors = _open(browser, index)
    got = np.array(page.evaluate(f"charnn.logitsFor({json.dumps(TEXT)})"))
    want = reference_logits(runs / name, TEXT)
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-4
    # the greedy sample equals charnn sample --temperature 0, the link's parameters in the hash
    page, errors2 = _open(browser, index, "#prime=one%20two&temperature=0&length=200&seed=1")
    printed = _charnn("sample", runs / name, "--prime", "one two", "--temperature", "0", "--length", "200")
    assert page.text_content("#output") + "\n" == printed.stdout
    assert errors == errors2 == []


def test_model_json_and_weights_bin_describe_the_weights_for_other_programs(runs, tmp_path):
    from charnn import checkpoint as ckpt

    export_web(runs / "gru", tmp_path / "web")
    about = json.loads((tmp_path / "web" / "model.json").read_text())
    blob = (tmp_path / "web" / "weights.bin").read_bytes()
    weights = ckpt.load(runs / "gru").weights
    assert about["config"]["cell"] == "gru" and set(about["tensors"]) == set(weights)
    for k, t in about["tensors"].items():
        a = np.frombuffer(blob, dtype="<f4", count=int(np.prod(t["shape"])), offset=t["offset"]).reshape(t["shape"])
        assert np.array_equal(a, weights[k].numpy())


@pytest.mark.slow
def test_export_never_writes_over_a_folder_of_someone_elses_files(runs, tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<p>my home page</p>")
    r = _charnn("export", runs / "lstm", "--out", tmp_path / "site")
    assert r.returncode == 2 and "was not written by charnn" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (tmp_path / "site" / "index.html").read_text() == "<p>my home page</p>"
    assert sorted(p.name for p in (tmp_path / "site").iterdir()) == ["index.html"]
    assert _charnn("export", runs / "lstm", "--out", tmp_path / "web").returncode == 0
    assert _charnn("export", runs / "gru", "--out", tmp_path / "web").returncode == 0  # ours: replaced
    assert json.loads((tmp_path / "web" / "model.json").read_text())["config"]["cell"] == "gru"


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_the_onnx_step_run_by_onnxruntime_gives_pytorchs_logits(runs, tmp_path, name):
    ort = pytest.importorskip("onnxruntime")
    from charnn import checkpoint as ckpt
    from charnn.web.export import export_onnx

    export_onnx(runs / name, tmp_path / "onnx")
    about = json.loads((tmp_path / "onnx" / "model.json").read_text())
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    vocab = ckpt.load(runs / name).vocab
    ids = np.asarray(vocab.encode(TEXT), dtype=np.int64)
    cfg = about["config"]
    state = {k: np.zeros((cfg["layers"], 1, cfg["hidden"]), np.float32) for k in about["inputs"][1:]}
    got = []
    for i in ids:  # one step at a time, the state fed back
        out = session.run(None, {"ids": np.array([i]), **state})
        got.append(out[0][0])
        state = dict(zip(about["inputs"][1:], out[1:]))
    assert np.abs(np.array(got) - reference_logits(runs / name, TEXT)).max() < 1e-4


def test_a_transformers_onnx_step_with_its_cache_gives_pytorchs_logits_past_the_block(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    import torch

    from charnn import checkpoint as ckpt
    from charnn.config import ModelConfig, RunConfig
    from charnn.model import build
    from charnn.vocab import Vocab
    from charnn.web.export import export_onnx

    vocab = Vocab(sorted({ord(c) for c in TEXT}))
    torch.manual_seed(0)
    model = build(ModelConfig(cell="transformer", layers=2, heads=2, embed=16, hidden=16, block=8,
                              vocab_size=len(vocab)))
    ckpt.save(tmp_path / "gpt.safetensors", RunConfig(model=model.cfg), vocab, model, {"step": 0})
    export_onnx(tmp_path / "gpt.safetensors", tmp_path / "onnx")
    about = json.loads((tmp_path / "onnx" / "model.json").read_text())
    assert about["inputs"] == ["ids", "kv"] and "block // 2" in about["state"]
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    c = about["config"]
    empty = np.zeros((c["layers"], 2, 1, c["heads"], 0, c["embed"] // c["heads"]), np.float32)
    ids = np.asarray(vocab.encode(TEXT), dtype=np.int64)
    assert len(ids) > 3 * c["block"]  # the window slides several times
    kv, got, seen = empty, [], []
    for i in ids:  # the caller's slide, as model.json says
        if kv.shape[4] == c["block"]:
            kv = empty
            for j in seen[-(c["block"] // 2):]:
                kv = session.run(None, {"ids": np.array([j]), "kv": kv})[1]
        logits, kv = session.run(None, {"ids": np.array([i]), "kv": kv})
        got.append(logits[0])
        seen.append(i)
    assert np.abs(np.array(got) - reference_logits(tmp_path / "gpt.safetensors", TEXT)).max() < 1e-4
