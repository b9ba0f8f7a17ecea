import random
import sys
from pathlib import Path

import pytest


def _shared_data() -> Path:
    """The reference corpora: $CHARNN_SHARED_DATA, else the nearest shared/data beside the
    repository or a folder above it (CI lays a copy of shared/ beside its clone)."""
    import os

    if os.environ.get("CHARNN_SHARED_DATA"):
        return Path(os.environ["CHARNN_SHARED_DATA"])
    repo = Path(__file__).resolve().parents[1]
    for up in repo.parents:
        if (up / "shared" / "data").is_dir():
            return up / "shared" / "data"
    return repo.parent / "shared" / "data"


SHARED = _shared_data()


def require(present: bool, what: str) -> None:
    """Skip a test whose input is missing on a developer's machine; under CI (CI=true), where the
    input must be there, fail instead, so that a test never silently stops running."""
    if not present:
        import os

        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{what} is missing")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache folder: nothing is read from or written to ~/.cache."""
    monkeypatch.setenv("CHARNN_CACHE", str(tmp_path_factory.mktemp("cache")))


def learnable_text(n_lines: int = 400, seed: int = 0) -> str:
    """Text with a structure a tiny model learns in seconds: counting words in fixed order."""
    rng = random.Random(seed)
    words = ["one", "two", "three", "four", "five"]
    lines = []
    for _ in range(n_lines):
        k = rng.randint(1, 5)
        lines.append(" ".join(words[:k]) + ".")
    return "\n".join(lines) + "\n"


@pytest.fixture
def text_file(tmp_path) -> Path:
    p = tmp_path / "text.txt"
    p.write_text(learnable_text(), encoding="utf-8")
    return p


def tiny_config(text: Path, **train):
    from charnn.config import RunConfig, apply_preset

    cfg = RunConfig()
    apply_preset(cfg, "tiny")
    cfg.data.text = str(text)
    cfg.model.hidden = 32
    cfg.model.embed = 16
    cfg.train.seq_len = 20
    cfg.train.batch_size = 8
    cfg.train.eval_every = 20
    cfg.train.warmup_steps = 5
    cfg.train.threads = 1
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


PYTHON = sys.executable


@pytest.fixture(scope="session")
def quote_model(tmp_path_factory):
    """(run dir, held-out text) of a small LSTM that needs a quote-tracking cell."""
    import os

    from inspect_helpers import train_quote_model

    folder = tmp_path_factory.mktemp("quote_model")
    old = os.environ.get("CHARNN_CACHE")
    os.environ["CHARNN_CACHE"] = str(folder / "cache")
    try:
        return train_quote_model(folder)
    finally:
        if old is None:
            os.environ.pop("CHARNN_CACHE", None)
        else:
            os.environ["CHARNN_CACHE"] = old


class StderrLines:
    """Reads a process's stderr in a thread, so a test can wait for a line with a deadline and
    fail, instead of hanging, when the line never comes."""

    def __init__(self, proc):
        import threading

        self.proc, self.lines, self._cond = proc, [], threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self.lines.append(None)  # end of stream
            self._cond.notify_all()

    def wait_for(self, prefix: str, timeout: float = 90) -> str:
        import time

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line is None:
                        raise AssertionError(f"the process ended without printing {prefix!r}: {self.text()}")
                    if line.startswith(prefix):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line starting {prefix!r} within {timeout} s: {self.text()}")
                self._cond.wait(left)

    def text(self) -> str:
        return "".join(x for x in self.lines if x)

    def finish(self, timeout: float = 90) -> str:
        """Wait for the process to end (killing it past the deadline) and return all of stderr."""
        import subprocess

        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the process did not end within {timeout} s: {self.text()}")
        self._thread.join(timeout=10)
        return self.text()


# ---- a real browser (Playwright driving Debian's chromium) -----------------------------------------

BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


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


def shot(page, name: str) -> None:
    """Keep a screenshot in $CHARNN_SCREENSHOTS (the README's pictures come from there)."""
    import os

    folder = os.environ.get("CHARNN_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name))


def contrast(background: str, letters: str) -> float:
    """WCAG contrast ratio of two CSS colours ("rgb(r, g, b)" or "#000" / "#fff" / "rgb(0, 0, 0)")."""
    def rgb(css):
        if css.startswith("#"):
            css = css[1:]
            if len(css) == 3:
                css = "".join(ch * 2 for ch in css)
            return [int(css[k:k + 2], 16) for k in (0, 2, 4)]
        return [int(float(v)) for v in css[css.index("(") + 1:-1].split(",")[:3]]

    def lum(c):
        lin = [(v / 255) / 12.92 if v / 255 <= 0.04045 else ((v / 255 + 0.055) / 1.055) ** 2.4 for v in rgb(c)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    a, b = sorted((lum(background), lum(letters)), reverse=True)
    return (a + 0.05) / (b + 0.05)
