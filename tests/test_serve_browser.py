"""The page `charnn serve` answers at /, in a real headless browser against a real uvicorn."""

import json
import os
import time

import numpy as np
import pytest
from helpers import contrast, shot
from helpers import Server, train_runs, wait

pytest.importorskip("fastapi")

from charnn.web import serve  # noqa: E402
from charnn.web.serve import create_app, open_runs  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_runs(tmp_path_factory.mktemp("serve_page"))


@pytest.fixture
def slow(monkeypatch):
    """The real sampler, paced (3 ms a piece) so that a stream is long enough to watch."""
    real = serve.stream

    def paced(*a, **k):
        pieces = real(*a, **k)  # the prime is checked now, as the real one does

        def gen():
            for piece in pieces:
                time.sleep(0.003)
                yield piece
        return gen()

    monkeypatch.setattr(serve, "stream", paced)


@pytest.fixture
def site(runs, browser, slow):
    app = create_app(open_runs([runs / "lstm", runs / "gru"]), workers=2, queue=4)
    with Server(app) as srv:
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: None if r.url.startswith(srv.url) else errors.append(f"network request {r.url}"))
        page.goto(srv.url + "/")
        page.wait_for_selector("body[data-ready='1']")
        yield page, srv, errors
        page.close()


def _api_sample(srv, body) -> str:
    import httpx

    return httpx.post(f"{srv.url}/api/runs/lstm/sample", json=body, timeout=30).json()["samples"][0]


def _colours(page, box="#output"):
    return page.eval_on_selector_all(f"{box} span", "s => s.map(e => [e.style.backgroundColor, e.style.color])")


@pytest.mark.slow
def test_a_sample_streams_into_the_page_coloured_by_a_cell_that_can_be_changed(site):
    page, srv, errors = site
    page.evaluate("""() => { window.growth = 0;
        new MutationObserver(() => window.growth++).observe(document.getElementById('output'), {childList: true}); }""")
    page.fill("#prime", "one two")
    page.fill("#length", "400")
    page.fill("#seed", "4")
    page.fill("#temperature", "1")
    page.click("[data-testid=go]")
    page.wait_for_function("document.getElementById('status').textContent.endsWith('characters')", timeout=30_000)
    text = page.text_content("#output")
    assert text == _api_sample(srv, {"prime": "one two", "length": 400, "seed": 4, "temperature": 1})
    assert page.evaluate("window.growth") > 20  # the text came in pieces, not at once
    page.wait_for_function("document.querySelectorAll('#output span')[400].style.backgroundColor !== ''")
    cell0 = _colours(page)
    assert len({bg for bg, _ in cell0}) > 10
    assert min(contrast(bg, fg) for bg, fg in cell0) >= 4.5  # readable on every colour
    page.fill("[data-testid=cell]", "7")
    page.dispatch_event("[data-testid=cell]", "input")
    cell7 = _colours(page)
    assert cell7 != cell0
    # the colours are the API's values for cell 7 of layer 0's tanh(c), in the paper's scale
    import httpx

    acts = httpx.post(f"{srv.url}/api/runs/lstm/activations", json={"text": text, "layer": 0, "quantity": "c"}).json()
    for (bg, _), ch in list(zip(cell7, acts["characters"]))[:50]:
        v = max(-1, min(1, ch["values"][7]))
        want = (255, round(255 * (1 + v)), round(255 * (1 + v))) if v < 0 else (round(255 * (1 - v)),) * 2 + (255,)
        assert bg == "rgb({}, {}, {})".format(*want)
    page.hover("#output span >> nth=30")
    assert page.locator("[data-testid=top5] tr").count() == 5
    shot(page, "serve-sample.png")
    assert errors == []


@pytest.mark.slow
def test_the_stop_button_ends_the_generation_on_the_server(site):
    page, srv, errors = site
    page.fill("#length", "10000")
    page.click("[data-testid=go]")
    page.wait_for_function("document.getElementById('output').textContent.length > 50")
    assert srv.app.state.streaming == 1
    page.click("[data-testid=stop]")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('stopped after')")
    assert wait(lambda: srv.app.state.streaming == 0, 10)
    assert len(page.text_content("#output")) < 5000
    assert errors == []


@pytest.mark.slow
def test_explore_colours_any_text_and_a_bad_character_is_a_message(site):
    page, srv, errors = site
    page.click("#tab-explore")
    page.fill("#explore-text", "one two three.\none two.\n")
    page.click("[data-testid=show]")
    page.wait_for_function("document.querySelectorAll('#explore-output span')[3].style.backgroundColor !== ''")
    assert page.text_content("#explore-output") == "one two three.\none two.\n"
    page.select_option("[data-testid=quantity]", "f")
    page.wait_for_function("document.querySelectorAll('#explore-output span')[3].style.backgroundColor !== ''")
    page.hover("#explore-output span >> nth=5")
    assert page.locator("[data-testid=top5] tr").count() == 5
    # the same guesses at other temperatures (the /next endpoint, tested against softmax(logits / T))
    page.wait_for_selector("[data-testid=temps] table")
    assert page.locator("[data-testid=temps] tr").count() == 6
    assert "T=0.2" in page.text_content("[data-testid=temps]")
    # the weights slider walks over the kept checkpoints: the same text, read by the step-20 weights
    assert page.get_attribute("[data-testid=ckpt]", "max") == "2"
    before = _colours(page, "#explore-output")
    page.fill("[data-testid=ckpt]", "0")
    page.dispatch_event("[data-testid=ckpt]", "input")
    assert page.text_content("[data-testid=ckpt-name]") == "step 20"
    page.wait_for_function("""before => [...document.querySelectorAll('#explore-output span')]
        .some((e, i) => e.style.backgroundColor !== before[i][0])""", arg=before)
    assert _colours(page, "#explore-output") != before
    page.select_option("[data-testid=run]", "gru")
    page.wait_for_function("[...document.querySelectorAll('#quantity option')].map(o => o.value).join() === 'h,r,z,n'")
    page.fill("#explore-text", "Z")
    page.click("[data-testid=show]")
    page.wait_for_function("document.getElementById('status').textContent.includes('never seen')")
    assert page.get_attribute("#status", "class") == "error"
    assert errors == []


@pytest.mark.slow
def test_compare_scores_one_text_with_two_runs_as_eval_does(site):
    import httpx

    page, srv, errors = site
    text = "one two three.\none two three four five.\none.\n"
    page.click("#tab-compare")
    page.fill("#compare-text", text)
    page.select_option("[data-testid=other]", "gru")
    page.click("[data-testid=compare]")
    page.wait_for_selector("[data-testid=bpc-b]")
    for sel, name in (("bpc-a", "lstm"), ("bpc-b", "gru")):
        want = httpx.post(f"{srv.url}/api/runs/{name}/eval", json={"text": text}).json()["bpc"]
        assert abs(float(page.text_content(f"[data-testid={sel}]")) - want) < 1e-3
    colours = _colours(page, "#compare-output")
    assert colours[0][0] == "" and len({bg for bg, _ in colours[1:]}) > 5
    assert min(contrast(bg, fg) for bg, fg in colours[1:]) >= 4.5
    assert errors == []


@pytest.mark.slow
def test_the_train_view_follows_a_run_as_its_logs_grow(runs, browser, tmp_path):
    import shutil

    shutil.copytree(runs / "lstm", tmp_path / "growing")
    app = create_app(open_runs([tmp_path / "growing"]))
    with Server(app) as srv:
        page = browser.new_page()
        page.goto(srv.url + "/")
        page.wait_for_selector("body[data-ready='1']")
        page.click("#tab-train")
        page.wait_for_selector("[data-testid=train-line]")
        logged = [json.loads(x) for x in (tmp_path / "growing" / "metrics.jsonl").read_text().splitlines()]
        n_train = sum("train_loss" in r for r in logged)
        assert int(page.get_attribute("[data-testid=train-line]", "data-points")) == n_train
        steps = page.eval_on_selector_all(".snap", "s => s.map(e => +e.dataset.step)")
        assert steps == sorted(steps, reverse=True) and steps
        with open(tmp_path / "growing" / "metrics.jsonl", "a") as f:  # the run goes on
            f.write(json.dumps({"step": 1000, "train_loss": 0.5}) + "\n")
            f.write(json.dumps({"step": 1000, "val_loss": 0.6}) + "\n")
        with open(tmp_path / "growing" / "samples.jsonl", "a") as f:
            f.write(json.dumps({"step": 1000, "val_loss": 0.6, "text": "a brand new snapshot"}) + "\n")
        page.wait_for_function(f"+document.querySelector('[data-testid=train-line]').dataset.points === {n_train + 1}",
                               timeout=10_000)
        page.wait_for_selector(".snap[data-step='1000']", timeout=10_000)
        assert "a brand new snapshot" in page.text_content(".snap >> nth=0")
        assert "step 1000" in page.text_content("[data-testid=train-summary]")
        page.close()


def _rank(acts, a, b, T):
    """The page's select-and-match rule, written again from its description."""
    lo, hi = {"h": (-1, 1), "c": (-1, 1), "g": (-1, 1), "n": (-1, 1)}.get(acts["quantity"], (0, 1))
    v = np.array([c["values"] for c in acts["characters"]])  # (N, H)
    v = (v - (lo + hi) / 2) / ((hi - lo) / 2)
    w = max(3, b - a + 1)
    around = list(range(max(0, a - w), a)) + list(range(b + 1, min(len(v) - 1, b + w) + 1))
    inside, outside = v[a:b + 1], v[around]
    fires = (inside.min(0) >= T) & (outside.max(0) < T)
    score = inside.mean(0) - outside.mean(0)
    order = sorted(range(v.shape[1]), key=lambda j: (-int(fires[j]), -score[j]))
    firing = [j for j in order if fires[j]][:3] or order[:1]
    on = (v[:, firing] >= T).all(1)
    places = int(on[0]) + int(((~on[:-1]) & on[1:]).sum())
    return order, places


@pytest.mark.slow
def test_selecting_a_span_ranks_the_cells_that_fire_on_it_and_underlines_where_they_fire_again(site):
    import httpx

    page, srv, errors = site
    text = "one two three.\none two three four five.\none two three.\n"
    page.click("#tab-explore")
    page.fill("#explore-text", text)
    page.click("[data-testid=show]")
    page.wait_for_function("document.querySelectorAll('#explore-output span')[3].style.backgroundColor !== ''")
    a, b = 8, 12  # the first "three"
    first = page.locator("#explore-output span").nth(a).bounding_box()
    last = page.locator("#explore-output span").nth(b).bounding_box()
    page.mouse.move(first["x"] + 1, first["y"] + first["height"] / 2)
    page.mouse.down()
    page.mouse.move(last["x"] + last["width"] - 1, last["y"] + last["height"] / 2, steps=5)
    page.mouse.up()
    page.wait_for_selector("#ranking li")
    assert f"characters {a}-{b}" in page.text_content("[data-testid=ranking]")
    shown = page.eval_on_selector_all("#ranking li", "s => s.map(e => +e.dataset.cell)")
    acts = httpx.post(f"{srv.url}/api/runs/lstm/activations", json={"text": text, "layer": 0, "quantity": "c"}).json()
    order, places = _rank(acts, a, b, 0.3)
    assert shown == order[:10]
    assert int(page.text_content("[data-testid=places]")) == places
    assert page.locator("#explore-output span.match").count() > 0
    page.click("#ranking li >> nth=1")  # a ranked cell is one click from its colours
    assert page.input_value("[data-testid=cell]") == str(order[1])
    assert errors == []


@pytest.mark.slow
def test_holding_a_cell_changes_the_sample_as_the_api_says(site):
    page, srv, errors = site
    page.fill("#length", "200")
    page.fill("#seed", "9")
    page.click("[data-testid=go]")
    page.wait_for_function("document.getElementById('status').textContent.endsWith('characters')")
    free = page.text_content("#output")
    page.fill("[data-testid=cell]", "3")
    page.dispatch_event("[data-testid=cell]", "input")
    page.fill("[data-testid=hold-value]", "0.95")
    page.click("[data-testid=hold]")
    page.fill("[data-testid=cell]", "6")
    page.dispatch_event("[data-testid=cell]", "input")
    page.click("[data-testid=silence]")
    assert page.input_value("[data-testid=clamp]") == "0:3=0.95,0:6=0"
    page.click("[data-testid=go]")
    page.wait_for_function("document.getElementById('status').textContent.endsWith('characters')")
    held = page.text_content("#output")
    assert held != free
    assert held == _api_sample(srv, {"length": 200, "seed": 9, "temperature": 0.8, "clamp": "0:3=0.95,0:6=0"})
    page.wait_for_function("document.querySelectorAll('#output span')[150].style.backgroundColor !== ''")
    assert errors == []


@pytest.mark.skipif(not os.environ.get("CHARNN_SCREENSHOT_RUN"), reason="set CHARNN_SCREENSHOT_RUN=RUN_DIR (and "
                    "CHARNN_SCREENSHOTS=folder, CHARNN_SCREENSHOT_CELL=LAYER:CELL) to picture a real run's served page")
def test_the_served_page_of_a_real_run(browser):
    from pathlib import Path

    run = Path(os.environ["CHARNN_SCREENSHOT_RUN"])
    layer, cell = os.environ.get("CHARNN_SCREENSHOT_CELL", "0:0").split(":")
    with Server(create_app(open_runs([run]), workers=2)) as srv:
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        page.goto(srv.url + "/")
        page.wait_for_selector("body[data-ready='1']")
        page.select_option("[data-testid=layer]", layer)
        page.fill("[data-testid=cell]", cell)
        page.dispatch_event("[data-testid=cell]", "input")
        page.fill("#prime", "The count went")
        page.fill("#length", "700")
        page.fill("#seed", "1")
        page.click("[data-testid=go]")
        page.wait_for_function("document.getElementById('status').textContent.endsWith('characters')", timeout=60_000)
        page.wait_for_function("document.querySelectorAll('#output span')[600].style.backgroundColor !== ''",
                               timeout=60_000)
        page.hover("#output span >> nth=120")
        assert page.locator("[data-testid=top5] tr").count() == 5
        shot(page, "serve-real.png")


@pytest.mark.slow
def test_the_page_of_a_server_with_a_token_carries_it_on_every_call(runs, browser):
    token = "page-token-0123456789"
    with Server(create_app(open_runs([runs / "lstm"]), token=token)) as srv:
        page = browser.new_page()
        refused = []
        page.on("response", lambda r: refused.append(r.url) if r.status == 401 else None)
        page.goto(f"{srv.url}/?token={token}")
        page.wait_for_selector("body[data-ready='1']")  # the runs list came through the API
        page.fill("#length", "40")
        page.click("[data-testid=go]")
        page.wait_for_function("document.getElementById('status').textContent.endsWith('characters')", timeout=30_000)
        assert len(page.text_content("#output")) == 40 and refused == []
        page.goto(srv.url + "/")  # without the token nothing comes
        assert page.text_content("body").count("needs its token") == 1
        page.close()


@pytest.mark.slow
def test_a_run_trained_with_ngram_mix_samples_its_mixture_unless_unticked(tmp_path, browser):
    from charnn.study.mixture import fit_run
    from charnn.trainer import train
    from helpers import cache_at, learnable_text, tiny_config

    (tmp_path / "text.txt").write_text(learnable_text(), encoding="utf-8")
    with cache_at(tmp_path / "cache"):
        train(tiny_config(tmp_path / "text.txt", max_steps=40, eval_every=40, ngram_mix=3), tmp_path / "mixed", progress=False)
        fit_run(tmp_path / "mixed")
        from charnn.study import mixture

        app = create_app(open_runs([tmp_path / "mixed"], mixtures=mixture))
        with Server(app) as srv:
            page = browser.new_page()
            page.goto(srv.url + "/")
            page.wait_for_selector("body[data-ready='1']")
            assert page.is_visible("[data-testid=mix]") and page.is_checked("[data-testid=mix]")
            assert page.text_content("#mix-name") == "mixed with its 3-gram"
            import httpx

            body = {"prime": "one", "length": 200, "seed": 2, "temperature": 1}
            shown = []
            for tick, mixed in [(True, True), (False, False)]:
                page.set_checked("[data-testid=mix]", tick)
                page.fill("#prime", "one")
                page.fill("#length", "200")
                page.fill("#seed", "2")
                page.fill("#temperature", "1")
                page.click("[data-testid=go]")
                page.wait_for_function("/characters/.test(document.getElementById('status').textContent)", timeout=30_000)
                said = page.text_content("#status")
                assert said.endswith("(the model mixed with its 3-gram)") == mixed, said
                got = httpx.post(f"{srv.url}/api/runs/mixed/sample", json=body | {"mix": mixed}, timeout=30).json()
                assert got["mixed"] == mixed and page.text_content("#output") == got["samples"][0]
                shown.append(got["samples"][0])
            assert shown[0] != shown[1]  # the box changes what is drawn
            page.close()
