"""charnn analyze emergence: single cells and linear probes over kept checkpoints."""

import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import cache_at, tiny_config

from charnn.inspect.features import part_labels, read_feature_file
from charnn.study.emergence import emergence, probe_score


def paren_text(n: int = 60_000, seed: int = 0) -> str:
    """Lower-case words outside parentheses, upper-case inside: the model must track them."""
    rng = random.Random(seed)
    out, size = [], 0
    while size < n:
        words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 6))) for _ in range(rng.randint(3, 8))]
        piece = f'({" ".join(words).upper()}) ' if rng.random() < 0.3 else " ".join(words) + " "
        out.append(piece + ("\n" if rng.random() < 0.2 else ""))
        size += len(out[-1])
    return "".join(out)


@pytest.fixture(scope="module")
def paren_run(tmp_path_factory):

    from charnn.trainer import train

    d = tmp_path_factory.mktemp("parens")
    with cache_at(d / "cache"):
        (d / "p.txt").write_text(paren_text(), encoding="utf-8")
        cfg = tiny_config(d / "p.txt", max_steps=400, eval_every=100, lr=1e-2)
        cfg.model.hidden, cfg.train.seq_len, cfg.train.batch_size = 16, 64, 16
        cfg.train.snapshot_steps = (10, 50)  # kept: 10, 50, 100, 200, 400
        train(cfg, d / "run", progress=False)
        return d / "run"


def test_the_probe_recovers_what_a_linear_read_out_can_and_scores_on_the_other_half():
    torch.manual_seed(0)
    x = torch.randn(4000, 6)
    fit = (np.arange(4000) // 500) % 2 == 0
    y = (x[:, 2] - 0.5 * x[:, 4] > 0).numpy().astype(float)  # linearly separable
    assert probe_score(x, y, "binary", fit) > 0.97
    noise = (torch.rand(4000) > 0.5).numpy().astype(float)  # unrelated to x
    assert probe_score(x, noise, "binary", fit) < 0.6
    rare = (torch.rand(4000) > 0.97).numpy().astype(float)  # rarely on, unrelated: chance is 0.5, not 0.97
    assert probe_score(x, rare, "binary", fit) < 0.65
    count = (3 * x[:, 1] + 1).numpy()
    assert probe_score(x, count, "count", fit) > 0.99


def test_a_probe_on_shuffled_labels_scores_chance_on_the_half_it_never_saw():
    """With as many dimensions as a model's state and few characters, a probe can memorise any
    labels on the half it is fitted on; only the other half says what it knows."""
    torch.manual_seed(1)
    x = torch.randn(1000, 300)
    fit = (np.arange(1000) // 100) % 2 == 0
    labels = np.random.default_rng(1).permutation(np.arange(1000) % 2).astype(float)
    assert abs(probe_score(x, labels, "binary", fit) - 0.5) < 0.08
    three = np.random.default_rng(2).permutation(np.arange(1000) % 3).astype(float)
    assert abs(probe_score(x, three, "labels", fit) - 1 / 3) < 0.08
    depth = np.random.default_rng(3).permutation(np.arange(1000) % 7).astype(float)
    assert probe_score(x, depth, "count", fit) < 0.05


@pytest.mark.slow
def test_the_probe_recovers_the_parentheses_on_the_last_checkpoint(paren_run, tmp_path):
    f = tmp_path / "parts.txt"
    f.write_text("0 first part\n3000 second part\n6000 third part\n")
    rep = emergence(paren_run, chars=9000, feature_file=str(f))
    assert [c["step"] for c in rep.checkpoints] == [10, 50, 100, 200, 400]
    last = rep.checkpoints[-1]["features"]
    assert last["parens"]["probe_score"] >= 0.95 and last["parens"]["probe_baseline"] == 0.5
    assert last["parens"]["best_cell_r"] > 0.5
    assert rep.checkpoints[0]["features"]["parens"]["probe_score"] < last["parens"]["probe_score"]
    assert last["file"]["probe_kind"] == "labels" and 0 <= last["file"]["probe_score"] <= 1
    assert last["line_position"]["probe_kind"] == "count"


def test_a_feature_file_labels_each_range_and_bad_ones_say_why(tmp_path):
    from charnn.errors import CharnnError

    f = tmp_path / "f.txt"
    f.write_text("# chapters\n0 one\n5 two\n8 one\n")
    assert read_feature_file(f, 10).tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 0, 0]
    f.write_text("3 one\n")
    with pytest.raises(CharnnError, match="must start at 0"):
        read_feature_file(f, 10)
    f.write_text("zero one\n")
    with pytest.raises(CharnnError, match="line 1: expected `START LABEL`"):
        read_feature_file(f, 10)


@pytest.mark.slow
def test_parts_start_at_each_match_and_too_few_are_refused(paren_run, tmp_path):
    from charnn.errors import CharnnError

    assert part_labels("ab// x\ncd// y", "//").tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2]
    assert part_labels("abc", "x*").tolist() == [0, 0, 0]  # empty matches start nothing
    with pytest.raises(CharnnError, match="not a valid regular expression"):
        part_labels("abc", "(")
    r = subprocess.run([sys.executable, "-m", "charnn", "analyze", "emergence", str(paren_run), "--out",
                        str(tmp_path / "few"), "--chars", "3000", "--parts", "NEVER-THERE"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "the probe needs at least two parts" in r.stderr and "Traceback" not in r.stderr
    rep = emergence(paren_run, chars=4000, parts="\n")
    row = rep.checkpoints[-1]["features"]["part"]
    assert row["probe_kind"] == "labels" and 0 < row["probe_baseline"] < 0.2 and 0 <= row["probe_score"] <= 1
    assert "each match of '\\n' starts one" in rep.features["part"]


@pytest.mark.slow
def test_the_command_prints_the_fixed_json(paren_run, tmp_path):
    r = subprocess.run([sys.executable, "-m", "charnn", "analyze", "emergence", str(paren_run), "--out",
                        str(tmp_path / "out"), "--chars", "3000", "--feature", "vowel=[aeAE]", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert [c["step"] for c in got["checkpoints"]] == [10, 50, 100, 200, 400]
    feats = got["checkpoints"][-1]["features"]
    assert {"parens", "vowel"} <= set(feats) and set(feats["parens"]) == {"best_cell_r", "probe_score"}
    assert json.loads((tmp_path / "out" / "emergence.json").read_text())["chars"] == 3000
