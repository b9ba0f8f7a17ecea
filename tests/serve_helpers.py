"""What the server tests share: two small trained runs and a real uvicorn on loopback."""

import os
import threading
import time
from pathlib import Path

from conftest import learnable_text, tiny_config


def train_runs(d: Path) -> Path:
    """d/lstm (2-layer LSTM) and d/gru (1-layer GRU), trained for seconds on the same counting text."""
    from charnn.trainer import train

    old = os.environ.get("CHARNN_CACHE")
    os.environ["CHARNN_CACHE"] = str(d / "cache")
    try:
        text = d / "text.txt"
        text.write_text(learnable_text(), encoding="utf-8")
        cfg = tiny_config(text, max_steps=60, eval_every=30)
        cfg.model.layers = 2
        cfg.train.snapshot_steps = (20, 40)  # weights kept at steps 20 and 40
        train(cfg, d / "lstm", progress=False)
        cfg = tiny_config(text, max_steps=40, eval_every=20)
        cfg.model.cell = "gru"
        train(cfg, d / "gru", progress=False)
    finally:
        if old is None:
            os.environ.pop("CHARNN_CACHE", None)
        else:
            os.environ["CHARNN_CACHE"] = old
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
