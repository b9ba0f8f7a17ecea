"""Labelled documents (--label / --labels): the model is conditioned on the label at every step,
sampling follows the label, and attribution tells two sources apart (and cannot when they are
the same)."""

import json
import random

import numpy as np
import torch
import pytest

import charnn as charnn_api
from charnn import checkpoint as ckpt
from charnn.data import prepare
from charnn.documents import END
from charnn.attribution.score import attribute
from charnn.trainer import train
from helpers import tiny_config
from helpers import charnn


def markov(rng, table: dict, n: int) -> str:
    """n characters from a first-order chain: table[c] is what may follow c, with weights."""
    c = rng.choice(list(table))
    out = [c]
    for _ in range(n - 1):
        nxt, w = zip(*table[c].items())
        c = rng.choices(nxt, w)[0]
        out.append(c)
    return "".join(out)


CYCLE = {"a": {"b": 9, "c": 1}, "b": {"c": 9, "d": 1}, "c": {"d": 9, "a": 1}, "d": {"a": 9, "b": 1}}
BACK = {"a": {"d": 9, "c": 1}, "b": {"a": 9, "d": 1}, "c": {"b": 9, "a": 1}, "d": {"c": 9, "b": 1}}


def labelled_run(tmp_path, sources: dict, n=300, length=60, steps=300, seed=0):
    tmp_path.mkdir(exist_ok=True)
    rng = random.Random(seed)
    docs, labels = [], []
    for k in range(n):
        name = list(sources)[k % len(sources)]
        docs.append(markov(rng, sources[name], length))
        labels.append(name)
    (tmp_path / "docs.txt").write_text("\n".join(docs) + "\n")
    (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n")
    cfg = tiny_config(tmp_path / "docs.txt", max_steps=steps, eval_every=steps, lr=1e-2)
    cfg.data.documents, cfg.data.labels_file = "line", str(tmp_path / "labels.txt")
    train(cfg, tmp_path / "run", progress=False)
    return tmp_path / "run"


@pytest.fixture(scope="module")
def alpha(tmp_path_factory):
    """Lines of a, b, c labelled low and of x, y, z labelled high: the label alone decides the alphabet."""
    tmp_path = tmp_path_factory.mktemp("alpha")
    rng = random.Random(1)
    lines = ["".join(rng.choice("abc") for _ in range(rng.randint(3, 8))) if k % 2 == 0 else
             "".join(rng.choice("xyz") for _ in range(rng.randint(3, 8))) for k in range(600)]
    (tmp_path / "t.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "l.txt").write_text("\n".join("low" if k % 2 == 0 else "high" for k in range(600)) + "\n")
    cfg = tiny_config(tmp_path / "t.txt", max_steps=250, eval_every=250, lr=1e-2)
    cfg.data.documents, cfg.data.labels_file = "line", str(tmp_path / "l.txt")
    train(cfg, tmp_path / "run", progress=False)
    return tmp_path


def test_serve_offers_the_labels_and_writes_in_each_ones_style(alpha):
    fastapi = pytest.importorskip("fastapi")  # noqa: F841
    from fastapi.testclient import TestClient

    from charnn.web.serve import create_app, open_runs

    with TestClient(create_app(open_runs([alpha / "run"]), workers=1, queue=2)) as client:
        (about,) = client.get("/api/runs").json()
        assert about["labels"] == ["high", "low"] and about["documents"] is True
        got = client.post("/api/runs/run/sample", json={"label": "high", "num": 10, "temperature": 1}).json()
        assert len(got["samples"]) == 10 and all(set(d) <= set("xyz") and d for d in got["samples"])
        r = client.post("/api/runs/run/sample/stream", json={"label": "low", "seed": 3, "temperature": 1})
        text = "".join(json.loads(line[6:]).get("text", "") for line in r.text.splitlines()
                       if line.startswith("data: "))
        assert text and set(text) <= set("abc"), text
        r = client.post("/api/runs/run/sample", json={"label": "middle"})
        assert r.status_code == 400 and "not one of this run's labels: high, low" in r.text
        r = client.post("/api/runs/run/eval", json={"text": "abcab"})  # labels from a file: none in a text
        assert r.status_code == 400 and "--labels" in r.text and "charnn attribute" in r.text
        for name, alphabet in (("high", "xyz"), ("low", "abc")):  # a document's first character, in the label's style
            got = client.post("/api/runs/run/next", json={"label": name, "top": 3, "temperatures": [1]}).json()
            assert set(got["candidates"]) == set(alphabet), got
            assert got["probs"]["1"] == pytest.approx(list(charnn_api.load(alpha / "run").next("", [1.0], 3, name)[1.0].values()), abs=1e-6)  # the API rounds to 6 places
        r = client.post("/api/runs/run/next", json={"text": "ab"})
        assert r.status_code == 400 and "give --label NAME, one of high, low" in r.text


@pytest.mark.slow
def test_the_label_alone_decides_the_alphabet(alpha):
    tmp_path = alpha
    loaded = ckpt.load(tmp_path / "run")
    assert loaded.config.model.labels == 2 and loaded.meta["labels"] == ["high", "low"]
    assert "label_embed.weight" in loaded.weights
    for name, alphabet in (("low", set("abc")), ("high", set("xyz"))):
        r = charnn("sample", tmp_path / "run", "--label", name, "--documents", "30", "--json", "--temperature", "1")
        assert r.returncode == 0, r.stderr
        docs = json.loads(r.stdout)["documents"]
        assert len(docs) == 30 and all(set(d) <= alphabet for d in docs), (name, docs)
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "one.txt").write_text("abcabcab\n")
    (tmp_path / "q" / "two.txt").write_text("xyzzyx\n")
    r = charnn("attribute", tmp_path / "run", tmp_path / "q", "--json")
    assert r.returncode == 0, r.stderr
    got = {d["document"]: d for d in json.loads(r.stdout)["documents"]}
    assert got["one.txt"]["verdict"] == "low" and got["two.txt"]["verdict"] == "high"
    assert got["one.txt"]["bpc"]["low"] < got["one.txt"]["bpc"]["high"] and got["one.txt"]["chars"] == 9
    check_calibration(tmp_path / "run", got)
    ev = json.loads(charnn("eval", tmp_path / "run", "--split", "val", "--json").stdout)
    assert ev["loss"] == pytest.approx(ckpt.load(tmp_path / "run").meta["val_loss"], rel=1e-5)
    r = charnn("sample", tmp_path / "run", "--show-probs", "--label", "low", "--json", "--temperatures", "1")
    assert r.returncode == 0 and set(json.loads(r.stdout)["candidates"][:3]) == set("abc"), r.stdout + r.stderr
    r = charnn("sample", tmp_path / "run", "--label", "middle")
    assert r.returncode == 2 and "--label 'middle' is not one of this run's labels: high, low" in r.stderr
    r = charnn("sample", tmp_path / "run")
    assert r.returncode == 2 and "give --label NAME, one of high, low" in r.stderr


def check_calibration(run, got: dict) -> None:
    """What `charnn attribute` printed, recomputed independently: each label's offset is the mean,
    per true label, of the reference documents' bits under it (one evaluate() per document and
    label), then the mean over the true labels; a calibrated score is the bits less the offset."""
    import math

    from charnn.attribution.score import CALIBRATE, training_references
    from charnn.documents import labelled_ids
    from charnn.evaluate import evaluate

    loaded = ckpt.load(run)
    model, names = loaded.build_model(), loaded.meta["labels"]
    refs = training_references(loaded, CALIBRATE)  # what the command used: its default
    for label, doc in refs:  # labelled as the training split has them: each label's own alphabet
        assert set(doc) <= {"low": set("abc"), "high": set("xyz")}[label], (label, doc)
    assert sorted({lab for lab, _ in refs}) == names and len(refs) == 2 * CALIBRATE
    per = {n: [[evaluate(model, labelled_ids(loaded.vocab, d, k), streams=1).bpc for k in range(len(names))]
               for lab, d in refs if lab == n] for n in names}
    offset = np.mean([np.mean(v, axis=0) for v in per.values()], axis=0)
    for d in got.values():
        for k, n in enumerate(names):
            assert math.isclose(d["calibrated_bpc"][n], d["bpc"][n] - offset[k], abs_tol=1e-5)
    r = charnn("attribute", run, run.parent / "q", "--json", "--calibrate", "0")
    raw = {d["document"]: d for d in json.loads(r.stdout)["documents"]}
    assert all("calibrated_bpc" not in d and d["bpc"] == got[k]["bpc"] for k, d in raw.items())


def test_each_end_symbol_carries_the_label_of_the_document_after_it(tmp_path):
    (tmp_path / "t.txt").write_text("aa\nbb\naa\nbb\naa\nbb\naa\nbb\n")
    (tmp_path / "l.txt").write_text("A\nB\nA\nB\nA\nB\nA\nB\n")
    enc = prepare(str(tmp_path / "t.txt"), seed=3, split=(0.5, 0.25, 0.25), documents="line",
                  label=("", str(tmp_path / "l.txt")))
    V = len(enc.vocab)
    assert enc.labels == ("A", "B")
    train_ids = np.asarray(enc.splits((0.5, 0.25, 0.25))["train"], dtype=np.int64)
    chars, labels = train_ids % V, train_ids // V
    text = enc.vocab.decode(chars)
    docs = text.split(END)[:-1]
    at = 0
    for k, d in enumerate(docs):
        assert set(labels[at:at + len(d)]) == {"AB".index({"a": "A", "b": "B"}[d[0]])}  # its own label
        after = docs[k + 1] if k + 1 < len(docs) else d
        assert labels[at + len(d)] == "AB".index({"a": "A", "b": "B"}[after[0]])  # its end: the next one's
        at += len(d) + 1


@pytest.mark.slow
def test_attribution_tells_two_sources_apart_and_not_two_equal_ones(tmp_path):
    run = labelled_run(tmp_path / "two", {"cycle": CYCLE, "back": BACK})
    rng = random.Random(9)
    held = [(f"{name}-{k}", markov(rng, table, 60)) for k in range(15) for name, table in
            (("cycle", CYCLE), ("back", BACK))]
    loaded = ckpt.load(run)
    got = attribute(loaded, loaded.build_model(), held)
    assert np.mean([r.verdict == r.name.split("-")[0] for r in got]) >= 0.9
    assert all(abs(sum(r.posterior.values()) - 1) < 1e-9 for r in got)
    # the same source under two names: no better than chance
    run = labelled_run(tmp_path / "same", {"left": CYCLE, "right": CYCLE}, seed=1)
    loaded = ckpt.load(run)
    got = attribute(loaded, loaded.build_model(), [(f"{k}", markov(rng, CYCLE, 60)) for k in range(40)])
    share = np.mean([r.verdict == "left" for r in got])
    assert 0.15 <= share <= 0.85 and np.mean([max(r.posterior.values()) for r in got]) < 0.9


def test_a_transformer_is_conditioned_on_the_label_too(tmp_path):
    """The label's embedding joins every position's, so the cached sampling path and the forward agree."""
    import torch

    from charnn.config import ModelConfig
    from charnn.model import build
    from charnn.stepper import make_stepper

    torch.manual_seed(0)
    m = build(ModelConfig(cell="transformer", layers=2, heads=2, embed=16, hidden=16, block=8, vocab_size=5,
                          labels=3)).eval()
    x = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]]) + 5 * torch.tensor([[0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 0, 0]])
    with torch.no_grad():
        logits, _ = m(x)
        stepper = make_stepper(m, m.init_state(1))
        steps = torch.stack([stepper.step(x[:, t])[0] for t in range(x.shape[1])])
        other, _ = m(x % 5 + 5)  # the same characters under label 1 throughout
    assert logits.shape == (1, 12, 5) and torch.allclose(steps, logits[0], atol=1e-5)
    assert not torch.allclose(other, logits, atol=1e-3)
    y = x.clone()
    assert m.loss(x, y)[0] > 0  # targets are characters: a label id is never out of the read-out's range


@pytest.mark.parametrize("cell", ["lstm", "transformer"])
def test_a_labelled_run_resumes_bit_identically(tmp_path, cell):
    """Killed at step 13 and resumed: the same weights, the label embedding included, and every
    checkpoint still carries the labels, the lead-in and its label."""
    rng = random.Random(3)
    docs = [markov(rng, CYCLE if k % 2 else BACK, 30) for k in range(200)]
    (tmp_path / "d.txt").write_text("\n".join(docs) + "\n")
    (tmp_path / "l.txt").write_text("\n".join("cycle" if k % 2 else "back" for k in range(200)) + "\n")

    def cfg():
        c = tiny_config(tmp_path / "d.txt", max_steps=24, eval_every=10)
        c.data.documents, c.data.labels_file = "line", str(tmp_path / "l.txt")
        if cell == "transformer":
            c.model.cell, c.model.layers, c.model.heads, c.model.embed, c.model.hidden, c.model.block = \
                "transformer", 1, 2, 16, 16, 16
            c.train.seq_len, c.train.windows = 16, "random"
        return c

    train(cfg(), tmp_path / "whole", progress=False)
    first = train(cfg(), tmp_path / "split", progress=False, on_step=lambda s: s >= 13)
    assert first.stopped_by == "interrupt"
    train(None, tmp_path / "split", resume=True, progress=False)
    a, b = ckpt.load(tmp_path / "whole", "last"), ckpt.load(tmp_path / "split", "last")
    assert "label_embed.weight" in a.weights and all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
    for key in ("labels", "lead_in", "lead_label", "label_counts"):
        assert a.meta[key] == b.meta[key], key
    assert sorted(a.meta["labels"]) == ["back", "cycle"]


@pytest.mark.slow
def test_calibration_needs_the_training_text_and_says_how_to_do_without(tmp_path):
    run = labelled_run(tmp_path / "gone", {"cycle": CYCLE, "back": BACK}, n=60, steps=20)
    (tmp_path / "q.txt").write_text("abcdabcd\n")
    (run.parent / "docs.txt").unlink()  # the run's text moved away
    r = charnn("attribute", run, tmp_path / "q.txt")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "give --calibrate 0" in r.stderr, r.stderr
    r = charnn("attribute", run, tmp_path / "q.txt", "--calibrate", "0", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["calibrated_on"] == 0


def test_a_labelled_run_is_opened_up_reading_each_document_under_its_label(alpha, tmp_path):
    """inspect reads a labelled run's text with each document's label: the cells page shows the
    characters, the ablation's losses are evaluate's (the unit is predicted, not the label), and
    where a document starts the model expects its label's alphabet, which only the label can tell."""
    from charnn.evaluate import char_losses as evaluate_losses
    from charnn.inspect import open_subject
    from charnn.inspect.ablate import char_losses
    from charnn.web.pages import cells_page_data

    s = open_subject(alpha / "run", split="val", labelled_ok=True)
    assert (np.asarray(s.ids) >= len(s.vocab)).any() and set(s.text) <= set("abcxyz" + END)
    nll, _ = char_losses(s.model, s.ids, streams=1)
    np.testing.assert_allclose(nll[:-1], evaluate_losses(s.model, np.asarray(s.ids), streams=1)[:-1], atol=1e-4)
    page = cells_page_data(s, jump=False)
    assert "".join(page["text"]) == s.text
    starts = [t for t in range(len(s.text) - 1) if s.text[t] == END]
    on_alphabet = [sum(p for c, p in page["top5"][t] if c in ("abc" if s.text[t + 1] in "abc" else "xyz"))
                   for t in starts]
    assert np.mean(on_alphabet) > 0.9, np.mean(on_alphabet)  # a label-blind model: about 0.5
    assert np.nanmean(nll[starts]) < 1.4  # ln 3 = 1.10 knowing the alphabet, ln 6 = 1.79 not
    page_file = tmp_path / "cells.html"
    r = charnn("inspect", "cells", alpha / "run", "--out", page_file)
    assert r.returncode == 0 and page_file.stat().st_size > 0, r.stderr
    r = charnn("analyze", "errors", alpha / "run", "--out", tmp_path / "err")  # n-gram analyses: not yet, one line
    assert r.returncode == 2 and "conditioned on labels" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_serve_reads_cells_in_the_label_asked_for(alpha, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from charnn.web.serve import create_app, open_runs

    plain = tmp_path / "plain"
    (plain / "t.txt").parent.mkdir()
    (plain / "t.txt").write_text("abcxyz\n" * 200)
    train(tiny_config(plain / "t.txt", max_steps=5, eval_every=5), plain / "plainrun", progress=False)
    with TestClient(create_app(open_runs([alpha / "run", plain / "plainrun"]), workers=1, queue=2)) as client:
        ask = lambda label, run="run": client.post(  # noqa: E731
            f"/api/runs/{run}/activations", json={"text": END + "ab", "label": label, "quantity": "h"})
        for name, alphabet in (("high", "xyz"), ("low", "abc")):  # after an end symbol: the label's first characters
            got = ask(name).json()["characters"]
            assert [c["char"] for c in got] == [END, "a", "b"]
            assert {t["char"] for t in got[0]["top"][:3]} == set(alphabet), got[0]["top"]
        r = ask(None)
        assert r.status_code == 400 and "give --label NAME, one of high, low" in r.text
        r = ask("low", run="plainrun")
        assert r.status_code == 400 and "trained without labels" in r.text


def test_text_read_under_a_runs_label_regex_says_which_documents_it_cannot_label(tmp_path):
    """eval --text and the API's score read a file's documents with the run's --label regex: a file
    with no document, documents the regex finds no label in, or labels the run never saw are each
    one line naming that (not the training-time complaint that the user's --label matches nothing)."""
    rng = random.Random(2)
    lines = [f"{name}: " + "".join(rng.choice("abc") for _ in range(6)) for name in ["ann", "bob"] * 60]
    (tmp_path / "t.txt").write_text("\n".join(lines) + "\n")
    cfg = tiny_config(tmp_path / "t.txt", max_steps=3, eval_every=3)
    cfg.data.documents, cfg.data.label = "line", r"^(\w+):"
    train(cfg, tmp_path / "run", progress=False)
    model = charnn_api.load(tmp_path / "run")
    assert model.score("ann: abcabc\nbob: cab\n").chars > 0  # known labels: scored
    for text, says in [("\n\n", r"holds no document \(this run cuts documents by --documents 'line'\)"),
                       ("abc\nann: abc\n", r"1 of its 2 documents have no label \(the run's --label .* finds none\)"),
                       ("cy: abc\n", "labels the run does not know: 'cy'")]:
        with pytest.raises(charnn_api.CharnnError, match=says):
            model.score(text)
    (tmp_path / "other.txt").write_text("cy: abc\nabc\n")
    r = charnn("eval", tmp_path / "run", "--text", tmp_path / "other.txt")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "1 of its 2 documents have no label" in r.stderr and "labels the run does not know: 'cy'" in r.stderr
