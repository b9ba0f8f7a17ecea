"""What the tests share (one module; no test file imports another): texts and configurations
that train in seconds, the reference corpora, the command line in a subprocess, small trained
runs, a real server, and helpers for browser pages. The fixtures are in conftest.py."""

import os
import random
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def cache_at(folder: Path):
    """CHARNN_CACHE is `folder` inside the block and what it was after it (for fixtures that train
    runs shared by a module or session; each test then gets its own cache from conftest)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARNN_CACHE", str(folder))
        yield


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



def learnable_text(n_lines: int = 400, seed: int = 0) -> str:
    """Text with a structure a tiny model learns in seconds: counting words in fixed order."""
    rng = random.Random(seed)
    words = ["one", "two", "three", "four", "five"]
    lines = []
    for _ in range(n_lines):
        k = rng.randint(1, 5)
        lines.append(" ".join(words[:k]) + ".")
    return "\n".join(lines) + "\n"


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


# ---- the command line, as a user runs it ---------------------------------------------------------

def charnn(*args, cwd=None, timeout=120):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "charnn", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


TINY = ["--preset", "tiny", "--hidden", "32", "--seq-len", "20", "--batch-size", "8", "--threads", "1", "--quiet"]


# ---- small trained runs and a real server --------------------------------------------------------

def train_runs(d: Path) -> Path:
    """d/lstm (2-layer LSTM) and d/gru (1-layer GRU), trained for seconds on the same counting text."""
    from charnn.trainer import train

    with cache_at(d / "cache"):
        text = d / "text.txt"
        text.write_text(learnable_text(), encoding="utf-8")
        cfg = tiny_config(text, max_steps=60, eval_every=30)
        cfg.model.layers = 2
        cfg.train.snapshot_steps = (20, 40)  # weights kept at steps 20 and 40
        train(cfg, d / "lstm", progress=False)
        cfg = tiny_config(text, max_steps=40, eval_every=20)
        cfg.model.cell = "gru"
        train(cfg, d / "gru", progress=False)
    return d


class Server:
    """An app served by uvicorn on 127.0.0.1 (a free port) in a thread, for the test's duration."""

    def __init__(self, app):
        import uvicorn

        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        assert wait(lambda: self.server.started, 30), "uvicorn did not start"
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def wait(cond, timeout=20) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def quote_text(n: int = 60000, seed: int = 0) -> str:
    """Lower-case words outside double quotes, upper-case words inside: to predict a letter's case
    the model must know whether it is inside quotes, often 20+ characters after the quote opened."""
    rng = random.Random(seed)
    out, size = [], 0
    while size < n:
        words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 6))) for _ in range(rng.randint(3, 8))]
        piece = f'"{" ".join(words).upper()}" ' if rng.random() < 0.25 else " ".join(words) + " "
        if rng.random() < 0.2:
            piece += "\n"
        out.append(piece)
        size += len(piece)
    return "".join(out)


def train_quote_model(folder: Path) -> tuple[Path, Path]:
    """-> (run directory, a fresh held-out text file in the same style)."""
    from charnn.config import RunConfig, apply_preset
    from charnn.trainer import train

    corpus = folder / "quotes.txt"
    corpus.write_text(quote_text(), encoding="utf-8")
    held_out = folder / "held_out.txt"
    held_out.write_text(quote_text(8000, seed=1), encoding="utf-8")
    cfg = RunConfig()
    apply_preset(cfg, "tiny")
    cfg.data.text = str(corpus)
    cfg.model.layers, cfg.model.hidden, cfg.model.embed, cfg.model.dropout = 1, 8, 16, 0.0
    cfg.train.seq_len, cfg.train.batch_size, cfg.train.lr = 64, 16, 1e-2
    cfg.train.max_steps, cfg.train.eval_every, cfg.train.threads = 400, 100, 1
    run = folder / "run"
    train(cfg, run, progress=False)
    return run, held_out
