"""The Python API (charnn.train, charnn.load, Model): the same runs, texts and numbers as the
command line for the same settings and seeds, and the same one-line errors (as CharnnError)."""

import html
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import charnn
from charnn.cli.main import main
from helpers import learnable_text

TINY = dict(preset="tiny", hidden=32, embed=16, seq_len=20, batch_size=8, threads=1, eval_every=20, warmup_steps=5)
TINY_FLAGS = ["--preset", "tiny", "--hidden", "32", "--embed", "16", "--seq-len", "20", "--batch-size", "8",
              "--threads", "1", "--eval-every", "20", "--warmup-steps", "5", "--quiet", "--samples", "0"]


def cli(capsys, *argv) -> str:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    (d / "text.txt").write_text(learnable_text(), encoding="utf-8")
    run = charnn.train(d / "text.txt", d / "run", max_steps=60, progress=False, **TINY)
    return d, run


def test_train_returns_the_run_and_the_cli_trains_the_same_weights(api_run, capsys):
    d, run = api_run
    assert run.steps == 60 and run.stopped_by == "max-steps" and run.dir == d / "run"
    assert run.best_val_loss == pytest.approx(run.best_bpc * np.log(2))
    cli(capsys, "train", d / "text.txt", "--out", d / "cli_run", "--max-steps", "60", *TINY_FLAGS)
    a, b = charnn.load(d / "run", "last"), charnn.load(d / "cli_run", "last")
    for (name, p), q in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(p, q), name
    assert json.loads((d / "run" / "config.json").read_text())["train"] == \
        json.loads((d / "cli_run" / "config.json").read_text())["train"]


def test_samples_equal_the_cli_for_the_same_seed(api_run, capsys):
    d, run = api_run
    model = run.load()
    two = model.sample("one", length=60, num=2, seed=3, temperature=0.9)
    assert len(two) == 2 and two[0] != two[1] and all(len(t) == 60 for t in two)
    shown = cli(capsys, "sample", d / "run", "--prime", "one", "--length", "60", "--num", "2", "--seed", "3",
                "--temperature", "0.9")
    assert shown == "\n----\n".join("one" + t for t in two) + "\n"
    pieces = list(model.sample(length=80, seed=5, stream=True))
    assert len(pieces) == 80 and "".join(pieces) == model.sample(length=80, seed=5)[0]
    assert cli(capsys, "sample", d / "run", "--length", "80", "--seed", "5") == "".join(pieces) + "\n"
    cut = model.sample(length=200, seed=5, stop=".")[0]
    assert cut.endswith(".") and cut.count(".") == 1
    for bad in (float("nan"), float("inf"), -1.0):  # the command line's parser refuses these before charnn sees them
        with pytest.raises(charnn.CharnnError, match="temperature must be 0 .argmax. or a positive finite number"):
            model.sample(length=5, temperature=bad)


def test_score_equals_charnn_eval_on_a_file(api_run, capsys):
    d, run = api_run
    text = learnable_text(60, seed=9)
    (d / "held.txt").write_text(text, encoding="utf-8")
    got = run.load().score(text)
    want = json.loads(cli(capsys, "eval", d / "run", "--text", d / "held.txt", "--json"))
    assert got.loss == pytest.approx(want["loss"], abs=1e-9) and got.chars == want["chars"] == len(text) - 1
    assert got.bpc == pytest.approx(got.loss / np.log(2))
    with pytest.raises(charnn.CharnnError, match="never seen"):
        run.load().score("one two Z")


def test_next_equals_show_probs(api_run, capsys):
    d, run = api_run
    got = run.load().next("one two", temperatures=(0.5, 1.0), top=5)
    want = json.loads(cli(capsys, "sample", d / "run", "--prime", "one two", "--show-probs", "--temperatures",
                          "0.5,1", "--json"))
    assert list(got[1.0]) == want["candidates"][:5]
    assert list(got[1.0].values()) == pytest.approx(want["probs"]["1"][:5])
    assert sum(got[0.5].values()) <= 1 + 1e-9 and max(got[0.5].values()) >= max(got[1.0].values())


def test_cells_are_the_recurrence_itself(api_run):
    d, run = api_run
    model = run.load()
    text = learnable_text(20, seed=4)
    cells = model.cells(text)
    L, H = model.config.layers, model.config.hidden
    assert cells["h"].shape == (L, len(text), H) and set(cells.quantities) >= {"c", "h"}
    # the last character's h is the state the model's own forward pass carries out of the text
    ids = torch.as_tensor(model.vocab.encode(text))[None]
    with torch.no_grad():
        _, (h, c) = model.net(ids)
    assert np.allclose(cells["h"][:, -1], h[:, 0].numpy(), atol=1e-5)
    assert np.allclose(cells["c"][:, -1], torch.tanh(c[:, 0]).numpy(), atol=1e-5)
    assert np.array_equal(cells.cell(0, 3, "h"), cells["h"][0, :, 3])
    page = cells._repr_html_()
    assert page.startswith("<iframe srcdoc=") and "http://" not in page and "https://" not in page
    assert f"reading {len(text):,} characters of the text" in html.unescape(page)
    with pytest.raises(KeyError, match="recorded quantities"):
        cells["q"]


def test_to_pandas_lays_out_one_row_per_character(api_run):
    pd = pytest.importorskip("pandas")
    d, run = api_run
    cells = run.load().cells("one two three.\n", quantities=["h"])
    frame = cells.to_pandas()
    assert isinstance(frame, pd.DataFrame) and frame.shape == (15, cells["h"].shape[0] * cells["h"].shape[2])
    assert "".join(frame.index) == "one two three.\n"
    assert frame[("h", 0, 7)].to_numpy() == pytest.approx(cells["h"][0, :, 7])


def test_find_and_clamp_match_the_command_line(quote_model, capsys):
    run_dir, held = quote_model
    model = charnn.load(run_dir)
    text = held.read_text(encoding="utf-8")
    found = {r.name: r for r in model.find(text, top=3)}
    want = json.loads(cli(capsys, "inspect", "find", run_dir, "--text", held, "--top", "3", "--json"))
    for f in want["features"]:
        assert [(t["layer"], t["cell"], t["quantity"]) for t in f["top"]] == \
               [(t.layer, t.cell, t.quantity) for t in found[f["feature"]].top]
    top = found["quotes"].top[0]
    held_model = model.clamp({(top.layer, top.cell): 0.9})
    assert held_model.net is model.net and "clamped" in repr(held_model)
    steered = held_model.sample(length=120, seed=2)[0]
    assert steered != model.sample(length=120, seed=2)[0]
    assert cli(capsys, "sample", run_dir, "--length", "120", "--seed", "2", "--clamp",
               f"{top.layer}:{top.cell}=0.9") == steered + "\n"
    rep = model.ablate(text[:3000], cells=[(top.layer, top.cell)])
    assert rep.overall.ablated > rep.overall.base  # the quote cell matters for this text


@pytest.mark.parametrize("settings, says", [
    (dict(hiden=10), "unknown setting 'hiden'"),
    (dict(hidden="big"), "setting hidden='big': expected int"),
    (dict(hidden=32.5), "expected int"),
    (dict(lr=float("nan")), "expected float"),
    (dict(compile=1), "expected bool"),
    (dict(lr=-1.0), "--lr"),
    (dict(checkpoint_every=60), "is now called 'checkpoint_seconds'"),
    (dict(checkpoint_seconds=-1.0), "--checkpoint-every must not be negative"),
    (dict(cell="transformer", heads=3, embed=32), "heads"),
])
def test_bad_settings_raise_one_line(tmp_path, settings, says):
    (tmp_path / "t.txt").write_text(learnable_text(50))
    with pytest.raises(charnn.CharnnError, match=says) as got:
        charnn.train(tmp_path / "t.txt", tmp_path / "run", progress=False, max_steps=1, **settings)
    assert "\n" not in str(got.value)
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_arguments_of_the_wrong_type_raise_one_line_naming_the_argument(api_run):
    model = api_run[1].load()
    for call, says in [
        (lambda: model.sample(length="50"), "length='50': expected a whole number"),
        (lambda: model.sample(length=True), "length=True: expected a whole number"),
        (lambda: model.sample(5), "prime=5: expected text"),
        (lambda: model.sample(stop=3), "stop=3: expected text or None"),
        (lambda: model.sample(temperature="hot"), "temperature='hot': expected a number"),
        (lambda: model.score(b"bytes"), "text=b'bytes': expected text"),
        (lambda: model.cells(None), "text=None: expected text"),
        (lambda: model.find("some text here", top="3"), "top='3': expected a whole number"),
        (lambda: model.beam(width="2"), "width='2': expected a whole number"),
        (lambda: model.next("a", temperatures="0.5"), "expected a list of numbers"),
        (lambda: model.next("a", temperatures=[None]), r"temperatures\[0\]=None: expected a number"),
        (lambda: model.clamp([1, 2]), "expected {.layer, cell.: value, ...} or 'LAYER:CELL=VALUE,...'"),
        (lambda: model.clamp({0: 0.5}), "the key 0 is not a .layer, cell. pair"),
        (lambda: model.clamp({(0, 1): "x"}), "value='x': expected a number"),
        (lambda: model.errors("some text", chars="5"), "chars='5': expected a whole number"),
    ]:
        with pytest.raises(charnn.CharnnError, match=says) as got:
            call()
        assert "\n" not in str(got.value)
    # numpy's numbers are numbers: a length from an array or a slider's float32 temperature
    assert model.sample(length=np.int64(7), temperature=np.float32(0.5), seed=1) == model.sample(length=7, temperature=0.5, seed=1)
    assert model.clamp({(np.int64(0), np.int64(1)): np.float32(0.5)}).sample(length=5, seed=1) == \
        model.clamp({(0, 1): 0.5}).sample(length=5, seed=1)


def test_import_charnn_is_light_and_exports_the_api():
    code = ("import sys, charnn; light = 'torch' not in sys.modules; "
            "from charnn import api; print(light, charnn.train is api.train, charnn.Model is api.Model, "
            "'load' in dir(charnn))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "True", "True"]
    with pytest.raises(AttributeError):
        charnn.no_such_thing  # noqa: B018


def test_attention_is_the_command_lines_ranking_and_the_models_own_rows(tmp_path, capsys):
    from charnn.inspect.attention import read_attention
    from charnn.subject import open_subject

    text = "def f(x):\n    return (x + 1)\n" * 20
    (tmp_path / "t.txt").write_text(text)
    run = charnn.train(str(tmp_path / "t.txt"), str(tmp_path / "run"), cell="transformer", layers=2, heads=2, embed=16,
                       block=32, max_steps=30, eval_every=30, seq_len=32, batch_size=8, progress=False)
    a = run.load().attention(text, top=2)
    rows = a.weights.sum(-1)
    assert a.weights.shape == (2, 2, len(text), 32) and np.allclose(rows, 1, atol=1e-5)  # each row is a distribution
    visible = np.arange(32)[None, :] <= a.context[:, None]
    assert (a.weights[:, :, ~visible] == 0).all()  # nothing on characters it could not see
    same = read_attention(open_subject(tmp_path / "run", text=str(tmp_path / "t.txt")))
    assert np.array_equal(a.weights, same.att)
    assert main(["inspect", "attention", str(tmp_path / "run"), "--text", str(tmp_path / "t.txt"), "--top", "2",
                 "--out", str(tmp_path / "a.html"), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)["ranking"]
    assert [(p.name, [(s.layer, s.head) for s in p.top]) for p in a.ranking] == \
        [(p["name"], [(s["layer"], s["head"]) for s in p["top"]]) for p in cli]
    assert [s.score for p in a.ranking for s in p.top] == pytest.approx([s["score"] for p in cli for s in p["top"]], abs=1e-4)
    assert 'content="charnn attention page"' in a.html() and a._repr_html_().startswith("<iframe srcdoc=")
    lstm = charnn.train(str(tmp_path / "t.txt"), str(tmp_path / "lstm"), **TINY, max_steps=2, progress=False).load()
    with pytest.raises(charnn.CharnnError, match="reads a transformer's attention"):
        lstm.attention(text)


# ---- the paper's analyses: the same numbers and files as charnn analyze ... ----------------------

def code_text(n_lines: int = 1500, seed: int = 1) -> str:
    """Short C-like lines with braces, brackets and quotes, learnable in a few steps."""
    import random

    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        body = " ".join(["one(two);"] * rng.randint(1, 3))
        lines.append(f'if (x) {{ {body} "three" }}' if rng.random() < 0.7 else f"{{ {body} {{ four; }} }}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def analysed_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("analyses")
    (d / "code.txt").write_text(code_text(), encoding="utf-8")
    charnn.train(d / "code.txt", d / "run", max_steps=60, keep_every=20, progress=False, **TINY)
    return d / "run"


def test_errors_and_braces_write_what_the_cli_writes(analysed_run, capsys, tmp_path):
    model = charnn.load(analysed_run)
    errors = model.errors(split="val", chars=3000, baseline=3)
    cli(capsys, "analyze", "errors", analysed_run, "--out", tmp_path / "e", "--split", "val", "--chars", "3000",
        "--baseline", "3")
    assert (tmp_path / "e" / "errors.csv").read_text() == errors.report.to_csv()
    cats = errors.to_dict()["categories"]
    assert sum(c["errors"] for c in cats.values()) == errors.report.errors > 0
    assert all(0 <= c["fixed_by_other"] <= c["errors"] for c in cats.values())
    itself = model.errors(split="val", chars=3000, compare=analysed_run)  # the same model fixes none of its errors
    assert itself.report.counts == errors.report.counts
    assert all(c["fixed_by_other"] == 0 for c in itself.to_dict()["categories"].values())
    assert errors._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"  # Jupyter shows the plot inline

    braces = model.braces(split="val", order=4)
    cli(capsys, "analyze", "braces", analysed_run, "--out", tmp_path / "b", "--split", "val", "--order", "4")
    assert (tmp_path / "b" / "braces.csv").read_text() == braces.report.to_csv()
    rows = braces.to_dict()["rows"]
    assert sum(r["braces"] for r in rows) == braces.report.braces > 0
    assert all(a["to"] < b["from"] for a, b in zip(rows, rows[1:]))  # by distance back to the '{' 
    png, csv_path = braces.save(tmp_path / "api")
    assert png.read_bytes()[:4] == b"\x89PNG" and csv_path.read_text() == braces.report.to_csv()


def test_context_dynamics_and_emergence_equal_the_cli_json(analysed_run, capsys, tmp_path):
    model = charnn.load(analysed_run)
    ctx = model.context(chars=3000, positions=100, max_context=16, orders=[1, 2, 3])
    shown = json.loads(cli(capsys, "analyze", "context", analysed_run, "--out", tmp_path / "c", "--chars", "3000",
                           "--positions", "100", "--max-context", "16", "--orders", "1-3", "--json"))
    assert shown == {k: ctx.to_dict()[k] for k in shown}
    assert [c["k"] for c in ctx.report.context] == [1, 2, 4, 8, 16] and len(ctx.report.ngram) == 3
    assert ctx.png()[:4] == b"\x89PNG"

    dyn = model.dynamics(chars=2000, orders="1-2")
    shown = json.loads(cli(capsys, "analyze", "dynamics", analysed_run, "--out", tmp_path / "d", "--chars", "2000",
                           "--orders", "1-2", "--json"))
    assert [c["step"] for c in dyn.report.checkpoints] == [c["step"] for c in shown["checkpoints"]] == [20, 40, 60]
    assert shown["checkpoints"] == [{k: c[k] for k in shown["checkpoints"][0]} for c in dyn.to_dict()["checkpoints"]]

    em = model.emergence(chars=2500)
    shown = json.loads(cli(capsys, "analyze", "emergence", analysed_run, "--out", tmp_path / "m", "--chars", "2500",
                           "--json"))
    got = em.to_dict()["checkpoints"]
    assert [c["step"] for c in got] == [20, 40, 60] and {"quotes", "brace_depth"} <= set(got[0]["features"])
    assert shown["checkpoints"] == [
        {"step": c["step"], "features": {n: {k: f[k] for k in ("best_cell_r", "probe_score")}
                                         for n, f in c["features"].items()}} for c in got]
    assert em.png() is None and json.loads((tmp_path / "m" / "emergence.json").read_text()) == json.loads(
        json.dumps(em.to_dict()))


def test_the_analyses_refuse_bad_settings_in_one_line(analysed_run):
    model = charnn.load(analysed_run)
    with pytest.raises(charnn.CharnnError, match="load the model from its run folder"):
        charnn.load(analysed_run / "best.safetensors").dynamics()
    with pytest.raises(charnn.CharnnError, match="baseline or compare, not both"):
        model.errors(baseline=3, compare=analysed_run)
    with pytest.raises(charnn.CharnnError, match="an order 1-30"):
        model.errors(baseline=31)
    with pytest.raises(charnn.CharnnError, match="power of 2"):
        model.context(max_context=12)
    with pytest.raises(charnn.CharnnError, match="orders run from 1 to 20"):
        model.dynamics(orders=[0, 3])
    with pytest.raises(charnn.CharnnError, match="not one of train, val, test"):
        model.braces(split="validation")
    with pytest.raises(charnn.CharnnError, match="not one of train, val, test"):
        model.context(split="validation")
