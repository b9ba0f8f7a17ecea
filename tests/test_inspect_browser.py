"""The HTML pages in a real headless browser (Playwright driving Debian's chromium).

`make test` installs chromium where it can; without it these tests skip, except under CI,
where a missing browser is a failure. Set CHARNN_SCREENSHOTS=folder to keep screenshots
(the README's pictures come from here).
"""

import os
from pathlib import Path

import pytest
from helpers import contrast, shot

from charnn.inspect import open_subject
from charnn.web.pages import write_cells_page, write_evolution_page


def _open(browser, path: Path):
    page = browser.new_page(viewport={"width": 1200, "height": 760})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: errors.append(f"network request {r.url}") if not r.url.startswith(("file:", "data:")) else None)
    page.goto(path.resolve().as_uri())
    return page, errors


def _colours(page, n=400):
    return page.eval_on_selector_all("#text span", f"s => s.slice(0, {n}).map(e => e.style.backgroundColor)")


@pytest.mark.slow
def test_choosing_another_cell_recolours_the_text(browser, quote_model, tmp_path):
    run, held_out = quote_model
    page_path = write_cells_page(open_subject(run, text=str(held_out), chars=1200), tmp_path / "cells.html")
    page, errors = _open(browser, page_path)
    assert page.locator("#text span").count() == 1200
    first = _colours(page)
    assert len(set(first)) > 10  # a real heatmap, not one flat colour
    letters = page.eval_on_selector_all("#text span", "s => s.map(e => [e.style.backgroundColor, e.style.color])")
    assert min(contrast(bg, fg) for bg, fg in letters) >= 4.5  # readable on every colour, deep blue included
    page.fill("[data-testid=cell]", "5")
    page.dispatch_event("[data-testid=cell]", "input")
    fifth = _colours(page)
    assert fifth != first
    page.click("#next")
    assert page.input_value("[data-testid=cell]") == "6" and _colours(page) != fifth
    page.select_option("[data-testid=quantity]", "f")
    forget = _colours(page)
    assert forget not in (first, fifth)
    # the URL remembers the view, so a link opens the same cell
    assert page.evaluate("location.hash") == "#layer=0&cell=6&q=f"
    # hovering a character shows the model's five guesses for the next one
    page.hover("#text span >> nth=40")
    rows = page.locator("[data-testid=top5] tr")
    assert rows.count() == 5
    assert page.locator("[data-testid=info]").is_visible()
    # jumping to the quote feature's best cell shows red/blue bands that follow the quotes
    page.select_option("[data-testid=jump]", index=1)
    text = page.eval_on_selector_all("#text span", "s => s.map(e => e.textContent)")
    quote_colours = _colours(page, 1200)
    inside = False
    kinds = {True: set(), False: set()}
    for ch, col in zip(text, quote_colours):
        if ch == '"':
            inside = not inside
            continue
        r, g, b = (int(v) for v in col[4:-1].split(","))
        kinds[inside].add("blue" if b > r else "red")
    assert kinds[True] != kinds[False] and len(kinds[True]) == 1
    page.hover("#text span >> nth=60")
    shot(page, "cells.png")
    assert errors == []


@pytest.mark.slow
def test_a_link_with_a_cell_opens_that_cell(browser, quote_model, tmp_path):
    run, held_out = quote_model
    page_path = write_cells_page(open_subject(run, text=str(held_out), chars=300), tmp_path / "cells.html")
    page = browser.new_page()
    page.goto(page_path.resolve().as_uri() + "#layer=0&cell=3&q=h")
    assert page.input_value("[data-testid=cell]") == "3"
    assert page.input_value("[data-testid=quantity]") == "h"


@pytest.mark.slow
def test_evolution_page_shows_curves_and_samples(browser, quote_model, tmp_path):
    run, _ = quote_model
    page_path = write_evolution_page(run, tmp_path / "evolution.html")
    page, errors = _open(browser, page_path)
    assert page.evaluate("document.querySelector('[data-testid=curves]').naturalWidth") > 300
    steps = page.eval_on_selector_all("#samples > .snap", "s => s.map(e => +e.dataset.step)")
    assert steps == sorted(steps) and len(steps) >= 3
    shot(page, "evolution.png")
    assert errors == []


@pytest.mark.skipif(not os.environ.get("CHARNN_SCREENSHOT_RUN"), reason="set CHARNN_SCREENSHOT_RUN=RUN_DIR (and "
                    "CHARNN_SCREENSHOTS=folder) to picture a real run's pages, as the README's are")
def test_pages_of_a_real_run(browser, tmp_path):
    run = Path(os.environ["CHARNN_SCREENSHOT_RUN"])
    subject = open_subject(run, split="val", chars=3000)
    cells, errors = _open(browser, write_cells_page(subject, tmp_path / "cells.html"))
    if cells.locator("[data-testid=jump] option").count() > 1:
        cells.select_option("[data-testid=jump]", index=1)
    cells.hover("#text span >> nth=120")
    assert cells.locator("[data-testid=top5] tr").count() == 5
    shot(cells, "cells-real.png")
    evo, errors2 = _open(browser, write_evolution_page(run, tmp_path / "evolution.html"))
    assert evo.locator(".snap").count() >= 1
    shot(evo, "evolution-real.png")
    assert errors == errors2 == []


def test_the_attention_page_shows_every_heads_weights_on_hover(browser, tmp_path):
    import random

    import torch

    from charnn import checkpoint as ckpt
    from charnn.config import ModelConfig, RunConfig
    from charnn.inspect.attention import read_attention
    from charnn.model import build
    from charnn.vocab import Vocab
    from charnn.web.pages import write_attention_page

    rng = random.Random(0)
    text = "".join(rng.choice('ab(c)"d\n') for _ in range(120))
    torch.manual_seed(0)
    model = build(ModelConfig(cell="transformer", layers=2, heads=3, embed=24, hidden=24, block=16, vocab_size=8))
    ckpt.save(tmp_path / "m.safetensors", RunConfig(model=model.cfg), Vocab(sorted({ord(c) for c in text})), model,
              {"step": 0})
    (tmp_path / "t.txt").write_text(text)
    subject = open_subject(tmp_path / "m.safetensors", text=str(tmp_path / "t.txt"))
    path, data = write_attention_page(subject, tmp_path / "att.html")
    page, errors = _open(browser, path)
    assert page.locator("#text span").count() == 120
    assert page.locator("[data-testid=ranking] tr").count() == 1 + 4  # a header and the four patterns
    page.select_option("[data-testid=head]", "1:2")
    page.hover("#text span >> nth=50")
    assert page.locator("[data-testid=heads] .row").count() == 6  # every head of every layer
    want = read_attention(subject).att[1, 2, 50]  # the chosen head's weights from character 50 back
    shown = page.eval_on_selector_all("#text span", "s => s.map(e => e.style.backgroundColor)")
    for j in range(int(data["context"][50]) + 1):
        alpha = float(shown[50 - j].split(",")[-1].rstrip(")")) if shown[50 - j].startswith("rgba") else 1.0
        assert abs(alpha - want[j]) < 0.01, (j, shown[50 - j], want[j])
    assert all(c == "" for c in shown[51:])  # nothing after the hovered character
    shot(page, "attention")
    assert errors == []
