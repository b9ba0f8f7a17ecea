"""charnn analyze context: the loss with only the last k characters, on a copy task."""

import json
import random
import subprocess
import sys

import pytest
from helpers import cache_at, tiny_config

from charnn import checkpoint as ckpt
from charnn.study.context import context_use

D = 40  # the copy distance


def copy_text(n: int = 80_000, seed: int = 0, width: int = 2) -> str:
    """Blocks of 2D characters: a random string, dots, the same string again D characters after
    the first, dots. Only a model that reads D characters back can predict the copy (and when the
    next string starts)."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        s = [rng.choice("abcdefgh") for _ in range(width)]
        out += s + ["."] * (D - width) + s + ["."] * (D - width)
    return "".join(out)


@pytest.fixture(scope="module")
def copy_run(tmp_path_factory):

    from charnn.trainer import train

    d = tmp_path_factory.mktemp("copy")
    with cache_at(d / "cache"):
        (d / "copy.txt").write_text(copy_text(), encoding="utf-8")
        cfg = tiny_config(d / "copy.txt", max_steps=600, eval_every=200, lr=1e-2)
        cfg.model.hidden, cfg.train.seq_len, cfg.train.batch_size = 64, 100, 16
        train(cfg, d / "run", progress=False)
        return d / "run"


@pytest.mark.slow
def test_the_loss_stays_high_below_the_copy_distance_and_falls_above_it_unlike_the_ngrams(copy_run):
    rep = context_use(ckpt.load(copy_run), positions=1000, max_k=256, orders=(1, 2, 4, 8), chars=20_000)
    loss = {c["k"]: c["loss"] for c in rep.context}
    assert sorted(loss) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    short = min(v for k, v in loss.items() if k < D)
    assert short > loss[64] + 0.1  # below D the copy cannot be predicted
    assert all(abs(loss[k] - rep.unlimited) < 0.05 for k in (64, 128, 256))  # above D it is as good as all
    assert min(g["loss"] for g in rep.ngram) > loss[64] + 0.1  # n-grams (up to 7 characters) never see it
    assert rep.train_seq_len == 100


@pytest.mark.slow
def test_the_command_writes_the_plot_the_csv_and_the_fixed_json(copy_run, tmp_path):
    r = subprocess.run([sys.executable, "-m", "charnn", "analyze", "context", str(copy_run), "--out",
                        str(tmp_path / "out"), "--max-context", "64", "--positions", "200", "--orders", "1-3",
                        "--chars", "5000", "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert set(got) == {"train_seq_len", "unlimited", "context", "ngram"}
    assert [c["k"] for c in got["context"]] == [1, 2, 4, 8, 16, 32, 64]
    assert [g["order"] for g in got["ngram"]] == [1, 2, 3]
    assert (tmp_path / "out" / "context.csv").read_text().startswith("what,context,loss\n")
    assert (tmp_path / "out" / "context.png").read_bytes()[:4] == b"\x89PNG"
    bad = subprocess.run([sys.executable, "-m", "charnn", "analyze", "context", str(copy_run), "--out",
                          str(tmp_path / "o2"), "--max-context", "100"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "power of 2" in bad.stderr
