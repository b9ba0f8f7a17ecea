"""charnn analyze dynamics: kept checkpoints against n-gram models of each order."""

import json
import random

import numpy as np
import pytest
from helpers import tiny_config

from charnn.study.dynamics import divergences, dynamics


def markov_text(n: int = 60_000, seed: int = 0) -> str:
    """The next letter follows the previous one 60% of the time (a fixed successor) and the letter
    three back 35% of the time (another fixed map): a bigram model explains most of it early, only
    a 4-gram all of it."""
    rng = random.Random(seed)
    letters = "abcdefgh"
    succ = {c: letters[(i + 3) % 8] for i, c in enumerate(letters)}
    back = {c: letters[(5 * i + 1) % 8] for i, c in enumerate(letters)}
    out = list("abc")
    while len(out) < n:
        r = rng.random()
        out.append(succ[out[-1]] if r < 0.6 else back[out[-3]] if r < 0.95 else rng.choice(letters))
    return "".join(out)


def test_divergences_are_zero_between_a_model_and_itself_and_match_numpy_on_a_small_case():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=4)
    q = rng.dirichlet(np.ones(5), size=4)
    assert divergences(p, p) == (0.0, 0.0)
    kl = lambda a, b: (a * np.log(a / b)).sum(1)  # noqa: E731
    m = (p + q) / 2
    skl, js = divergences(p, q)
    assert skl == pytest.approx(float((kl(p, q) + kl(q, p)).mean()))
    assert js == pytest.approx(float((kl(p, m) / 2 + kl(q, m) / 2).mean()))
    assert 0 < js <= np.log(2)


@pytest.mark.slow
def test_an_early_checkpoint_predicts_like_a_low_order_model_and_the_last_like_a_higher_one(tmp_path):
    from charnn.trainer import train

    text = tmp_path / "markov.txt"
    text.write_text(markov_text(), encoding="utf-8")
    cfg = tiny_config(text, max_steps=640, eval_every=1000, lr=1e-2)
    cfg.model.hidden, cfg.train.seq_len, cfg.train.batch_size = 64, 32, 16
    cfg.train.snapshot_steps = (10, 40)  # kept: 10, 40, 80, 160, 320, 640
    train(cfg, tmp_path / "run", progress=False)
    rep = dynamics(tmp_path / "run", orders=(1, 2, 3, 4, 5), chars=4000)
    assert [c["step"] for c in rep.checkpoints] == [10, 40, 80, 160, 320, 640]
    first, last = rep.checkpoints[0], rep.checkpoints[-1]
    assert first["closest_order"] <= 2 and last["closest_order"] >= 4, [c["closest_order"] for c in rep.checkpoints]
    assert last["val_loss"] < first["val_loss"]
    # the 4-gram explains the source; the model ends far closer to it than to the bigram
    assert last["divergence"][4] < last["divergence"][2] / 2
    assert rep.ngram_loss[4] < rep.ngram_loss[2] < rep.ngram_loss[1]


@pytest.mark.slow
def test_the_command_writes_the_plot_the_csv_and_the_fixed_json(tmp_path):
    import subprocess
    import sys

    from charnn.trainer import train

    text = tmp_path / "markov.txt"
    text.write_text(markov_text(20_000), encoding="utf-8")
    cfg = tiny_config(text, max_steps=30, eval_every=1000)
    cfg.train.snapshot_steps = (10, 20)
    train(cfg, tmp_path / "run", progress=False)
    r = subprocess.run([sys.executable, "-m", "charnn", "analyze", "dynamics", str(tmp_path / "run"), "--out",
                        str(tmp_path / "out"), "--orders", "1-3", "--chars", "500", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["orders"] == [1, 2, 3] and [c["step"] for c in got["checkpoints"]] == [10, 20]
    assert set(got["checkpoints"][0]) == {"step", "val_loss", "closest_order", "divergence"}
    assert set(got["checkpoints"][0]["divergence"]) == {"1", "2", "3"}
    csv_lines = (tmp_path / "out" / "dynamics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("step,val_loss,closest_order,skl_1") and len(csv_lines) == 3
    assert (tmp_path / "out" / "dynamics.png").read_bytes()[:4] == b"\x89PNG"
