import random

import numpy as np
import pytest
from helpers import cache_at

from charnn.errors import CharnnError
from charnn.inspect import open_subject
from charnn.study.braces import brace_losses, matching_distances, write


def test_matching_distances_pair_each_closer_with_its_opener():
    t = "a{b{c}d}e}f{"
    assert matching_distances(t) == {5: 2, 7: 6}  # the stray '}' and the unclosed '{' are left out


def code_text(n_blocks=700, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n_blocks):
        body = " ".join("".join(rng.choice("xyz") for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 8)))
        out.append(f"f({rng.choice('ab')}) {{ {body}; }}\n")
    return "".join(out)


@pytest.fixture(scope="module")
def code_run(tmp_path_factory):

    from helpers import tiny_config
    from charnn.trainer import train

    d = tmp_path_factory.mktemp("braces")
    with cache_at(d / "cache"):
        (d / "code.txt").write_text(code_text())
        cfg = tiny_config(d / "code.txt", max_steps=150, eval_every=150)
        train(cfg, d / "run", progress=False)
        return d / "run"


def test_brace_losses_score_every_matched_brace_with_both_models(code_run, tmp_path):
    subject = open_subject(code_run, split="test")
    rep = brace_losses(subject, ngram_order=5)
    n_braces = sum(1 for p in matching_distances(subject.text) if p > 0)
    assert rep.braces == n_braces == sum(r[2] for r in rep.rows) > 10
    for lo, hi, n, rnn, ng in rep.rows:
        assert lo <= hi and n > 0 and 0 < rnn < 10 and 0 <= ng < 10
    # the RNN column is the model's loss on each '}' (target at p, read from the characters before
    # it), binned by distance: recompute it with one plain forward pass
    import torch

    with torch.no_grad():
        logits, _ = subject.model(torch.from_numpy(subject.ids.astype(np.int64))[None])
    logp = torch.log_softmax(logits[0], -1).numpy()
    dist = {p: d for p, d in matching_distances(subject.text).items() if p > 0}
    for lo, hi, n, rnn, _ in rep.rows:
        ps = [p for p, d in dist.items() if lo <= d <= hi]
        assert n == len(ps)
        assert rnn == pytest.approx(np.mean([-logp[p - 1, subject.ids[p]] for p in ps]), abs=1e-4)
    png, csv_path = write(rep, tmp_path / "b", "test")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert csv_path.read_text().splitlines()[0] == "distance_from,distance_to,braces,rnn_loss,ngram_loss"


def test_text_without_braces_is_refused(quote_model):
    run, held = quote_model
    with pytest.raises(CharnnError, match="no matched"):
        brace_losses(open_subject(run, text=str(held)), 3)


@pytest.mark.slow
def test_analyze_braces_command(code_run, tmp_path):
    from helpers import charnn

    r = charnn("analyze", "braces", code_run, "--out", tmp_path / "b", "--order", "6")
    assert r.returncode == 0, r.stderr
    assert "loss on '}' by distance" in r.stdout and (tmp_path / "b" / "braces.png").is_file()
    r = charnn("analyze", "braces", code_run, "--out", tmp_path / "b", "--order", "40")
    assert r.returncode == 2 and "between 1 and 30" in r.stderr
    r = charnn("analyze")
    assert r.returncode == 2 and "say what to analyze: errors, braces, dynamics, context or emergence" in r.stderr


def test_a_saved_ngram_gives_the_same_brace_table_as_one_trained_here(code_run, tmp_path):
    from helpers import charnn

    from charnn import checkpoint as ckpt

    text = ckpt.load(code_run).config.data.text
    assert charnn("ngram", text, "--order", "5", "--save", tmp_path / "n5.safetensors").returncode == 0
    subject = open_subject(code_run, split="test")
    a = brace_losses(subject, ngram_order=5)
    b = brace_losses(subject, ngram_file=tmp_path / "n5.safetensors")
    assert b.order == 5 and [r[:3] for r in a.rows] == [r[:3] for r in b.rows]
    np.testing.assert_allclose([r[4] for r in a.rows], [r[4] for r in b.rows], rtol=1e-12)
