import json

import pytest

from charnn.config import ModelConfig
from charnn.errors import CharnnError
from charnn.model import count_params, match_hidden
from charnn.study.grid import parse_budgets, plan
from charnn.model import CharRNN
from helpers import learnable_text


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_parameter_count_is_the_models_own(cell):
    for layers, hidden in ((1, 7), (3, 20)):
        m = CharRNN(ModelConfig(cell=cell, layers=layers, hidden=hidden, embed=9, dropout=0.0, vocab_size=13))
        assert count_params(cell, layers, hidden, 13, 9) == m.num_params
        # an embedding wider than the vocabulary is built at the vocabulary's width; so is the count
        cfg = ModelConfig(cell=cell, layers=layers, hidden=hidden, embed=40, dropout=0.0)
        assert cfg.fit_vocab(13) == pytest.approx((40 / 13) ** 0.5) and cfg.embed == 13
        assert count_params(cell, layers, hidden, 13, 40) == CharRNN(cfg).num_params


@pytest.mark.parametrize("vocab", [65, 87, 101])
def test_every_cell_and_depth_is_matched_within_5_percent_of_the_budget(vocab):
    budgets = parse_budgets("50k,130k,400k,1.3m")
    assert budgets == [50_000, 130_000, 400_000, 1_300_000]
    entries = plan(["rnn", "lstm", "gru"], [1, 2, 3], budgets, vocab, 64)
    assert len(entries) == 36
    for e in entries:
        assert abs(e.params - e.budget) / e.budget < 0.05, e
    # more parameters per cell in an LSTM than a GRU than an RNN: fewer cells for the same budget
    for b in budgets:
        assert match_hidden("lstm", 2, b, vocab, 64) < match_hidden("gru", 2, b, vocab, 64) < match_hidden(
            "rnn", 2, b, vocab, 64)


@pytest.mark.parametrize("vocab", [65, 101])
def test_a_transformer_is_matched_to_the_paper_budgets_too(vocab):
    from charnn.model import STUDY_BLOCK, STUDY_HEADS, build

    for e in plan(["transformer"], [1, 2, 3], parse_budgets("50k,130k,400k,1.3m"), vocab, 64):
        # widths come in steps of the 4 heads, so a step is up to ~12% of a small budget: within 10%
        assert e.hidden % STUDY_HEADS == 0 and abs(e.params - e.budget) / e.budget < 0.1, e
        m = build(ModelConfig(cell="transformer", layers=e.layers, heads=STUDY_HEADS, embed=e.hidden, hidden=e.hidden,
                              block=STUDY_BLOCK, vocab_size=vocab))
        assert m.num_params == e.params  # the count is the built model's own


def test_a_grid_transformer_reads_its_block_at_random_under_the_grid_protocol(tmp_path):
    from charnn.study.grid import Settings, run_config

    (e,) = plan(["transformer"], [2], [20_000], 40, 64)
    cfg = run_config(e, "t.txt", Settings(max_steps=5, lr=0.004), threads=1)
    m, t = cfg.model, cfg.train
    assert (m.cell, m.layers, m.heads, m.block, m.embed, m.hidden) == ("transformer", 2, 4, 64, e.hidden, e.hidden)
    assert (t.seq_len, t.windows, t.lr, t.batch_size, t.warmup_steps, t.optimizer) == (64, "random", 0.004, 32, 50,
                                                                                     "adamw")
    assert t.precision == "fp32"  # the committed report's protocol, whatever the default preset's precision


def test_bad_budgets():
    with pytest.raises(CharnnError, match="expected sizes"):
        parse_budgets("50x")
    with pytest.raises(CharnnError, match="below 100"):
        parse_budgets("10")


@pytest.mark.slow
def test_grid_trains_scores_tabulates_and_resumes(tmp_path):
    from helpers import charnn

    text = tmp_path / "t.txt"
    text.write_text(learnable_text(600))
    args = ["grid", text, "--out", tmp_path / "g", "--cells", "rnn,gru", "--layers", "1", "--params", "6k",
            "--max-steps", "30", "--jobs", "2", "--lr", "0.005"]
    r = charnn(*args, timeout=300)
    assert r.returncode == 0, r.stderr
    results = [json.loads(p.read_text()) for p in sorted((tmp_path / "g").glob("*/result.json"))]
    assert sorted(x["cell"] for x in results) == ["gru", "rnn"]
    assert all(abs(x["params"] - 6000) / 6000 < 0.05 and x["test_loss"] > 0 for x in results)
    configs = [json.loads(p.read_text()) for p in (tmp_path / "g").glob("*/config.json")]
    # one optimiser for all, the grid's own protocol whatever the default preset is
    assert [(c["train"]["lr"], c["model"]["dropout"], c["train"]["warmup_steps"], c["train"]["seq_len"])
            for c in configs] == [(0.005, 0.0, 50, 32)] * 2
    md = (tmp_path / "g" / "results.md").read_text()
    assert "| 6K | 1 |" in md and f"{results[0]['test_loss']:.4f}" in md and r.stdout == md
    assert (tmp_path / "g" / "grid.png").read_bytes()[:4] == b"\x89PNG"
    # run again: finished runs are not trained again; a missing result is redone alone
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "g").glob("*/last.safetensors")}
    rnn_result = next((tmp_path / "g").glob("rnn-*/result.json"))
    rnn_result.unlink()
    r = charnn(*args, timeout=300)
    assert r.returncode == 0 and "(1 already finished)" in r.stderr
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "g").glob("*/last.safetensors")} == stamp
    assert rnn_result.is_file()
    # a damaged result (a hand edit) is measured again, not read as finished nor a traceback
    gru_result = next((tmp_path / "g").glob("gru-*/result.json"))
    was = json.loads(gru_result.read_text())
    gru_result.write_text(json.dumps({**was, "test_loss": "low"}))
    r = charnn(*args, timeout=300)
    assert r.returncode == 0 and "(1 already finished)" in r.stderr, r.stderr
    assert json.loads(gru_result.read_text())["test_loss"] == pytest.approx(was["test_loss"])


def test_a_cached_study_result_is_read_only_when_whole(tmp_path):
    from charnn.files import cached_result

    f = tmp_path / "result.json"
    assert cached_result(f, "a", ("x",)) is None  # none yet
    for damaged in ["{", "[1, 2]", '"a"', '{"run": "b", "x": 1}', '{"run": "a"}', '{"run": "a", "x": "1"}',
                    '{"run": "a", "x": true}']:
        f.write_text(damaged)
        assert cached_result(f, "a", ("x",)) is None, damaged
    f.write_text('{"run": "a", "x": NaN, "y": "text"}')  # NaN is what json writes for a rate never measured
    got = cached_result(f, "a", ("x",))
    assert got is not None and got["y"] == "text"


@pytest.mark.parametrize("extra,msg", [
    (["--cells", "lstm,cnn"], "choose from rnn, lstm, gru, transformer"),
    (["--layers", "0"], "between 1 and 8"),
    (["--params", "big"], "expected sizes"),
    ([], "--max-time PER_RUN"),
    (["--lr", "0"], "--lr must be positive"),
    (["--dropout", "1"], "--dropout must be in [0, 1)"),
])
@pytest.mark.slow
def test_bad_grid_input(tmp_path, extra, msg):
    from helpers import charnn

    text = tmp_path / "t.txt"
    text.write_text(learnable_text(50))
    budget = [] if msg == "--max-time PER_RUN" else ["--max-steps", "5"]
    r = charnn("grid", text, "--out", tmp_path / "g", *budget, *extra)
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr
