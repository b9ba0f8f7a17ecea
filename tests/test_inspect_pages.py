import dataclasses
import base64
import json
import re

import numpy as np
import pytest
import torch

from charnn.errors import CharnnError
from charnn.inspect import open_subject
from charnn.web.pages import write_cells_page, write_evolution_page
from charnn.inspect.activations import RANGES, record_all
from charnn.web.pages import cells_page_data


def page_json(path):
    html = path.read_text(encoding="utf-8")
    m = re.search(r'<script id="data" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def test_cells_page_holds_every_cell_of_every_quantity(quote_model, tmp_path):
    run, held_out = quote_model
    subject = open_subject(run, text=str(held_out), chars=1200)
    page = write_cells_page(subject, tmp_path / "cells.html")
    d = page_json(page)
    assert "".join(d["text"]) == held_out.read_text()[:1200]
    acts = record_all(subject.model, subject.ids).acts
    for q in ("h", "c", "i", "f", "g", "o"):
        lo, hi = RANGES[q]
        raw = np.frombuffer(base64.b64decode(d["acts"][f"0:{q}"]), dtype=np.uint8).reshape(8, 1200)
        shown = lo + raw / 255 * (hi - lo)
        np.testing.assert_allclose(shown, acts[q][0].T.numpy(), atol=(hi - lo) / 255)
    # top-5 guesses: five, most likely first, and a probability of the next character that is
    # the model's own
    assert all(len(t) == 5 and [p for _, p in t] == sorted((p for _, p in t), reverse=True) for t in d["top5"])
    assert all(sum(p for _, p in t) <= 1.0001 for t in d["top5"])
    logp = record_all(subject.model, subject.ids).logp
    nxt = torch.from_numpy(subject.ids[1:].astype(np.int64))
    np.testing.assert_allclose(d["pnext"][:-1], logp[:-1].exp().gather(1, nxt[:, None])[:, 0].numpy(), atol=1e-4)
    # the page offers the quote cell to jump to
    assert any(j["feature"] == "quotes" and abs(j["r"]) >= 0.8 for j in d["jump"])


def test_text_that_would_end_the_script_block_early_is_escaped():
    from charnn.web.pages import _json_for_script

    obj = {"text": list('say "</script><script>alert(1)</script>" <!-- x')}
    out = _json_for_script(obj)
    assert "</" not in out and "<!--" not in out and json.loads(out) == obj


def test_a_file_name_with_markup_or_the_placeholder_leaves_the_page_intact(quote_model, tmp_path):
    run, held_out = quote_model
    odd = tmp_path / "a <!--<script> __DATA__ __TITLE__.txt"
    odd.write_text(held_out.read_text()[:300])
    page = write_cells_page(open_subject(run, text=str(odd), chars=300), tmp_path / "cells.html")
    html = page.read_text(encoding="utf-8")
    d = page_json(page)  # the data block is whole and parses
    assert "".join(d["text"]) == odd.read_text() and odd.name in d["title"]
    script = re.search(r'<script id="data" type="application/json">(.*?)</script>', html, re.S).group(1)
    assert "<" not in script  # nothing in the data can open or close markup
    assert "a &lt;!--&lt;script&gt; __DATA__ __TITLE__.txt" in html.split("</title>")[0]  # shown, not substituted


def test_pages_never_overwrite_a_file_charnn_did_not_write(quote_model, tmp_path):
    run, held_out = quote_model
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    with pytest.raises(CharnnError, match="not written by charnn"):
        write_cells_page(open_subject(run, text=str(held_out), chars=100), mine)
    with pytest.raises(CharnnError, match="not written by charnn"):
        write_evolution_page(run, mine)
    assert mine.read_text() == "<p>my notes</p>"
    # but a page of ours is replaced
    p = write_cells_page(open_subject(run, text=str(held_out), chars=100), tmp_path / "c.html")
    write_cells_page(open_subject(run, text=str(held_out), chars=50), p)
    assert len(page_json(p)["text"]) == 50


def test_too_long_a_page_is_refused(quote_model):
    run, held_out = quote_model
    subject = open_subject(run, text=str(held_out))
    long = dataclasses.replace(subject, ids=np.zeros(20_001, dtype=np.int64))
    with pytest.raises(CharnnError, match="too many for one page"):
        cells_page_data(long)


def test_evolution_page_shows_every_snapshot_and_the_curves(quote_model, tmp_path):
    run, _ = quote_model
    page = write_evolution_page(run, tmp_path / "evolution.html")
    html = page.read_text(encoding="utf-8")
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) >= 3
    assert sorted(map(int, re.findall(r'data-step="(\d+)"', html))) == [s["step"] for s in samples]
    for s in samples:
        assert s["text"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")[:50] in html
    png = (tmp_path / "evolution-loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and base64.b64encode(png).decode()[:200] in html


def test_evolution_needs_a_trained_run(tmp_path):
    with pytest.raises(CharnnError, match="not a run directory"):
        write_evolution_page(tmp_path / "nope", tmp_path / "e.html")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CharnnError, match="train a model into it first"):
        write_evolution_page(tmp_path / "empty", tmp_path / "e.html")


def test_evolution_shows_the_blogs_steps_first():
    from charnn.web.pages import _milestones

    steps = list(range(100, 11001, 100))
    assert sorted(_milestones(steps)) == [100, 300, 500, 700, 1200, 2000, 4000, 8000, 11000]
    assert _milestones([20, 40, 60]) == {60}
    assert _milestones([]) == set()


@pytest.mark.slow
def test_evolution_with_analyses_shows_each_kept_checkpoints_loss_best_cells_and_the_dynamics(quote_model, tmp_path):
    import subprocess
    import sys

    from charnn import checkpoint as ckpt

    run, _ = quote_model
    assert ckpt.kept_steps(run) == [100, 300]
    r = subprocess.run([sys.executable, "-m", "charnn", "inspect", "evolution", str(run), "--out",
                        str(tmp_path / "evo.html"), "--analyses", "--chars", "2000"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "evo.html").read_text(encoding="utf-8")
    kept = re.findall(r'data-step="(\d+)"><h3>.*?</h3><p class="kept" data-testid="kept">(.*?)</p>', html)
    assert [int(step) for step, _ in kept] == [100, 300]
    last = kept[-1][1]
    m = re.search(r"quotes: layer (\d+) cell (\d+) (\w) \(r = ([+-][\d.]+)\)", last)
    assert m and abs(float(m.group(4))) >= 0.8
    assert 'data-testid="dynamics"' in html
