"""The page `charnn serve` answers at /, in a real headless browser against a real uvicorn."""

import time

import pytest
from conftest import contrast, shot
from serve_helpers import Server, train_runs, wait

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
    page.select_option("[data-testid=run]", "gru")
    page.wait_for_function("[...document.querySelectorAll('#quantity option')].map(o => o.value).join() === 'h,r,z,n'")
    page.fill("#explore-text", "Z")
    page.click("[data-testid=show]")
    page.wait_for_function("document.getElementById('status').textContent.includes('never seen')")
    assert page.get_attribute("#status", "class") == "error"
    assert errors == []
