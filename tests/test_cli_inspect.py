"""`charnn inspect ...` as a user runs it, in a subprocess, on the quote model."""

import json

import pytest

from helpers import charnn


@pytest.mark.slow
def test_find_json_names_the_quote_cell(quote_model):
    run, held = quote_model
    r = charnn("inspect", "find", run, "--text", held, "--json", "--feature", "upper=[A-H]+")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    feats = {f["feature"]: f for f in d["features"]}
    assert abs(feats["quotes"]["top"][0]["r"]) >= 0.8
    assert abs(feats["upper"]["top"][0]["r"]) >= 0.5  # the user's feature, ranked like the built-in ones
    sn = feats["quotes"]["snippet"]
    assert len(sn["values"]) == len(sn["text"]) and '"' in sn["text"]


@pytest.mark.slow
def test_find_text_report_and_cells_page_link(quote_model):
    run, held = quote_model
    r = charnn("inspect", "find", run, "--text", held, "--top", "2")
    assert r.returncode == 0, r.stderr
    assert "quotes (inside double quotes" in r.stdout and "best layer 0 cell" in r.stdout
    assert "constant over this text, so not ranked: parens" in r.stdout
    assert "cells.html#layer=0&cell=" in r.stdout


@pytest.mark.slow
def test_cells_saturation_ablate_evolution_write_what_they_say(quote_model, tmp_path):
    run, held = quote_model
    r = charnn("inspect", "cells", run, "--text", held, "--chars", "500", "--out", tmp_path / "c.html")
    assert r.returncode == 0 and "wrote" in r.stderr and (tmp_path / "c.html").stat().st_size > 10_000
    r = charnn("inspect", "saturation", run, "--text", held, "--out", tmp_path / "sat")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "sat" / "saturation.png").is_file() and (tmp_path / "sat" / "saturation.csv").is_file()
    assert r.stdout.startswith("i gate, mean share shut / open: layer 0:")
    r = charnn("inspect", "evolution", run, "--out", tmp_path / "e.html")
    assert r.returncode == 0 and (tmp_path / "e.html").is_file() and (tmp_path / "e-loss.png").is_file()
    best = json.loads(charnn("inspect", "find", run, "--text", held, "--json").stdout)["features"][0]["top"][0]
    cell = f"{best['layer']}:{best['cell']}"
    r = charnn("inspect", "ablate", run, "--text", held, "--cells", cell, "--json")
    rep = json.loads(r.stdout)
    assert rep["cells"] == [cell] and rep["features"]["quotes"]["on"]["delta"] > rep["features"]["quotes"]["off"]["delta"]
    r = charnn("inspect", "ablate", run, "--text", held, "--cells", cell, "--mode", "mean")
    assert r.returncode == 0 and "quotes on" in r.stdout and "largest contrast" in r.stdout


BAD = [
    (["inspect"], "say what to inspect"),
    (["inspect", "find", "{d}/nothing"], "no such run directory"),
    (["inspect", "find", "{run}", "--feature", "x=("], "is invalid"),
    (["inspect", "find", "{run}", "--feature", "justaname"], "is not NAME=REGEX"),
    (["inspect", "find", "{run}", "--text", "{d}/unknown.txt"], "lacks"),
    (["inspect", "find", "{run}", "--text", "{held}", "--split", "val"], "not allowed with argument"),
    (["inspect", "ablate", "{run}", "--cells", "9:9"], "this model has layers 0..0"),
    (["inspect", "ablate", "{run}", "--cells", "zero"], "expected LAYER:INDEX"),
    (["inspect", "ablate", "{run}", "--cells", "0:1", "--mode", "half"], "use zero, mean or value:V"),
    (["inspect", "cells", "{run}", "--out", "{d}/mine.html"], "not written by charnn"),
    (["inspect", "cells", "{run}", "--out", "{d}/no/such/folder/p.html"], "does not exist"),
    (["inspect", "cells", "{run}", "--text", "{held}", "--chars", "30000", "--out", "{d}/p.html"], "too many for one page"),
    (["inspect", "saturation", "{run}", "--out", "{d}/mine.html"], "is a file"),
    (["inspect", "evolution", "{d}", "--out", "{d}/e.html"], "train a model into it first"),
    (["inspect", "cells", "{run}"], "required: --out"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a[:2]) + "|" + m for a, m in BAD])
@pytest.mark.slow
def test_bad_inspect_input_is_one_clear_line(quote_model, tmp_path, args, message):
    run, held = quote_model
    (tmp_path / "mine.html").write_text("<p>mine</p>")
    (tmp_path / "unknown.txt").write_text("XYZ")
    r = charnn(*[a.format(d=tmp_path, run=run, held=held) for a in args])
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert message in r.stderr, r.stderr
    assert (tmp_path / "mine.html").read_text() == "<p>mine</p>"
