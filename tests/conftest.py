"""The fixtures every test file may ask for; the helpers they use are in helpers.py."""

from pathlib import Path

import pytest
from helpers import BROWSER_ARGS, cache_at, learnable_text, require, train_quote_model


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache folder: nothing is read from or written to ~/.cache."""
    monkeypatch.setenv("CHARNN_CACHE", str(tmp_path_factory.mktemp("cache")))



@pytest.fixture
def text_file(tmp_path) -> Path:
    p = tmp_path / "text.txt"
    p.write_text(learnable_text(), encoding="utf-8")
    return p



@pytest.fixture(scope="session")
def quote_model(tmp_path_factory):
    """(run dir, held-out text) of a small LSTM that needs a quote-tracking cell."""
    folder = tmp_path_factory.mktemp("quote_model")
    with cache_at(folder / "cache"):
        return train_quote_model(folder)


@pytest.fixture(scope="module")
def browser():
    """`make test` installs chromium where it can; without it browser tests skip, except under CI,
    where a missing browser is a failure."""
    import shutil

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if exe is None or sync_playwright is None:
        missing = "chromium (apt-get install chromium)" if exe is None else "playwright (pip install playwright)"
        require(False, f"browser tests need {missing}; `make test` installs it")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=BROWSER_ARGS)
        yield b
        b.close()
