"""charnn serve on a transformer run: listing, sampling (whole and streamed), scoring and the next
character's distribution equal the command line's; the activations are its MLP neurons, and --clamp holds them as on the command line."""

import json
import os
import subprocess
import sys

import pytest

fastapi = pytest.importorskip("fastapi")
from helpers import learnable_text, tiny_config  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from charnn.config import ModelConfig  # noqa: E402
from charnn.web.serve import create_app, open_runs  # noqa: E402


def _charnn(*args):
    return subprocess.run([sys.executable, "-m", "charnn", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONUNBUFFERED="1"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from charnn.trainer import train

    d = tmp_path_factory.mktemp("serve_gpt")
    (d / "text.txt").write_text(learnable_text(), encoding="utf-8")
    cfg = tiny_config(d / "text.txt", max_steps=60, eval_every=30)
    cfg.model = ModelConfig(cell="transformer", layers=2, heads=2, embed=16, hidden=16, block=16)
    cfg.train.seq_len = 16
    train(cfg, d / "gpt", progress=False)
    return d / "gpt"


@pytest.fixture(scope="module")
def client(run):
    with TestClient(create_app(open_runs([run]), workers=1, queue=2)) as c:
        yield c


def test_the_run_is_listed_as_a_transformer(client):
    (got,) = client.get("/api/runs").json()
    assert got["name"] == "gpt" and got["cell"] == "transformer" and got["quantities"] == ["m"]


@pytest.mark.slow
def test_samples_scores_and_next_equal_the_command_line(client, run, tmp_path):
    body = {"prime": "one two", "length": 60, "seed": 4, "temperature": 0.8, "num": 2, "top_k": 5}
    got = client.post("/api/runs/gpt/sample", json=body)
    assert got.status_code == 200, got.text
    printed = _charnn("sample", run, "--prime", "one two", "--length", "60", "--seed", "4", "--temperature", "0.8",
                      "--num", "2", "--top-k", "5")
    assert "\n----\n".join(got.json()["samples"]) + "\n" == printed.stdout
    with client.stream("POST", "/api/runs/gpt/sample/stream", json={**body, "num": 1}) as r:
        pieces = [json.loads(line[6:])["text"] for line in r.iter_lines()
                  if line.startswith("data: ") and '"text"' in line]
    first = client.post("/api/runs/gpt/sample", json={**body, "num": 1}).json()["samples"][0]
    assert "one two" + "".join(pieces) == first
    text = learnable_text(40, seed=3)
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    scored = client.post("/api/runs/gpt/eval", json={"text": text}).json()
    cli = json.loads(_charnn("eval", run, "--text", tmp_path / "t.txt", "--json").stdout)
    assert scored["chars"] == cli["chars"] and scored["loss"] == pytest.approx(cli["loss"], rel=1e-6)
    nxt = client.post("/api/runs/gpt/next", json={"text": "one tw", "temperatures": [1], "top": 3}).json()
    shown = json.loads(_charnn("sample", run, "--prime", "one tw", "--show-probs", "--temperatures", "1",
                               "--json").stdout)
    assert nxt["candidates"] == shown["candidates"][:3]


def test_activations_are_the_mlp_neurons_and_clamps_hold_them(client, run):
    import numpy as np

    from charnn import checkpoint as ckpt
    from charnn.inspect.activations import Clamp, record_all
    from charnn.sample import parse_clamp, sample_text

    loaded = ckpt.load(run)
    model, cfg = loaded.build_model(), loaded.config.model
    about = client.get("/api/runs").json()[0]
    assert about["quantities"] == ["m"] and about["units"] == 4 * cfg.embed
    text = "one two three"
    r = client.post("/api/runs/gpt/activations", json={"text": text, "layer": 1, "quantity": "m"})
    assert r.status_code == 200, r.text
    got = r.json()
    want = record_all(model, np.asarray(loaded.vocab.encode(text)))
    assert got["cells"] == 4 * cfg.embed
    assert np.allclose([c["values"] for c in got["characters"]], want.acts["m"][1].numpy(), atol=1e-4)
    held = client.post("/api/runs/gpt/activations",
                       json={"text": text, "layer": 1, "quantity": "m", "clamp": "1:5=2.5"}).json()
    assert all(c["values"][5] == 2.5 for c in held["characters"])
    assert [c["loss"] for c in held["characters"]] != [c["loss"] for c in got["characters"]]
    clamped = parse_clamp("1:5=2.5", cfg)
    want = record_all(model, np.asarray(loaded.vocab.encode(text)), clamps=Clamp.from_clamped(clamped, cfg.cell))
    assert np.allclose([c["values"] for c in held["characters"]], want.acts["m"][1].numpy(), atol=1e-4)
    s = client.post("/api/runs/gpt/sample", json={"length": 40, "temperature": 0, "clamp": "0:3=3"}).json()
    assert s["samples"][0] == sample_text(model, loaded.vocab, 40, temperature=0, clamped=parse_clamp("0:3=3", cfg))[0]
    r = client.post("/api/runs/gpt/activations", json={"text": "one two", "layer": 0, "quantity": "h"})
    assert r.status_code == 400 and "has no quantity 'h'; it has m" in r.text
