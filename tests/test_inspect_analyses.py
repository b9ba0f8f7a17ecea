"""find / ablate / saturation on a model that had to learn a quote cell, and on hand-set models."""

import csv
import math

import numpy as np
import pytest
import torch

from charnn import checkpoint as ckpt
from charnn.config import RunConfig
from charnn.errors import CharnnError
from charnn.inspect import ablate, find_cells, gate_saturation, open_subject, parse_cells
from charnn.inspect.saturation import write
from charnn.model import CharRNN
from charnn.vocab import Vocab


@pytest.fixture(scope="module")
def quotes(quote_model):
    run, held_out = quote_model
    subject = open_subject(run, text=str(held_out))
    ranked = {r.name: r for r in find_cells(subject, top=8)}
    return subject, ranked


@pytest.mark.slow
def test_find_names_a_cell_that_tracks_quotes(quotes):
    subject, ranked = quotes
    best = ranked["quotes"].top[0]
    assert abs(best.r) >= 0.8, best
    assert [abs(t.r) for t in ranked["quotes"].top] == sorted((abs(t.r) for t in ranked["quotes"].top), reverse=True)
    # the correlation is the plain Pearson r of that cell with the feature over the text
    from charnn.inspect.activations import record_all
    from charnn.inspect.features import compute

    acts = record_all(subject.model, subject.ids, (best.quantity,)).acts[best.quantity][best.layer, :, best.cell]
    q = next(f for f in compute(subject.text) if f.name == "quotes").values
    assert np.corrcoef(acts.numpy(), q)[0, 1] == pytest.approx(best.r, abs=1e-4)
    # there is nothing to find for features this text never shows
    assert ranked["braces"].top == [] and "constant" in ranked["braces"].note


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_ablating_the_quote_cell_hurts_inside_quotes(quotes, mode):
    subject, ranked = quotes
    best = ranked["quotes"].top[0]
    rep = ablate(subject, [(best.layer, best.cell)], mode)
    _, inside, outside = rep.features["quotes"]
    assert inside.chars + outside.chars == rep.overall.chars == len(subject.ids) - 1
    assert inside.delta > 0.05, rep.to_dict()
    assert inside.delta > 3 * max(outside.delta, 0.0), rep.to_dict()
    # the least quote-like cell matters less inside quotes
    r = {(t.layer, t.cell): abs(t.r) for t in find_cells(subject, top=8)[0].top if t.quantity == "c"}
    weakest = min(r, key=r.get)
    other = ablate(subject, [weakest], mode).features["quotes"][1]
    assert other.delta < inside.delta


def test_the_unablated_loss_is_the_models_ordinary_loss(quotes):
    from charnn.evaluate import evaluate

    subject, _ = quotes
    base = ablate(subject, [(0, 0)], "zero")
    assert math.isfinite(base.overall.delta) and base.overall.delta != 0

    assert base.overall.base == pytest.approx(evaluate(subject.model, subject.ids, streams=1).loss, abs=1e-5)


@pytest.mark.parametrize("spec,msg", [
    ("0", "expected LAYER:INDEX"), ("a:1", "expected LAYER:INDEX"), ("1:0", "layers 0..0"), ("0:8", "cells 0..7"),
])
def test_parse_cells_checks_the_model_shape(spec, msg):
    with pytest.raises(CharnnError, match=msg):
        parse_cells(spec, 1, 8)
    assert parse_cells("0:1, 0:3,0:1", 1, 8) == [(0, 1), (0, 3)]


def _hand_set_run(tmp_path, cell="lstm"):
    """A 2-layer model whose gate biases pin some gates shut or open, saved as a run."""
    from charnn.config import ModelConfig

    cfg = RunConfig()
    cfg.model = ModelConfig(cell=cell, layers=2, hidden=6, embed=4, dropout=0.0, vocab_size=4)
    torch.manual_seed(0)
    m = CharRNN(cfg.model).eval()
    with torch.no_grad():
        for layer in range(2):
            b = getattr(m.rnn, f"bias_ih_l{layer}")
            b.zero_()
            if cell == "lstm":  # i, f, g, o blocks of 6
                b[0:3] = -20.0  # input gates of cells 0-2: always shut
                b[6:12] = 20.0  # every forget gate: always open
    vocab = Vocab([ord(c) for c in "abc\n"])
    text = tmp_path / "t.txt"
    text.write_text("abc\nab\ncab\n" * 50)
    cfg.data.text = str(text)
    run = tmp_path / "run"
    run.mkdir()
    ckpt.save(run / ckpt.BEST, cfg, vocab, m, {})
    return run, text


def test_gate_saturation_counts_shut_and_open_gates(tmp_path):
    run, text = _hand_set_run(tmp_path)
    sat = gate_saturation(open_subject(run, text=str(text)))
    assert sat.gates == ("i", "f", "o")
    assert np.all(sat.left["i"][:, :3] == 1.0) and np.all(sat.right["i"][:, :3] == 0.0)
    assert np.all(sat.right["f"] == 1.0) and np.all(sat.left["f"] == 0.0)
    assert np.all(sat.left["i"] + sat.right["i"] <= 1.0)
    png, csv_path = write(sat, tmp_path / "sat")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 3 * 2 * 6
    row = next(r for r in rows if r["gate"] == "i" and r["layer"] == "1" and r["cell"] == "2")
    assert float(row["left_saturated"]) == 1.0
    # written again: ours, so replaced; a file of the user's is never overwritten
    write(sat, tmp_path / "sat")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "saturation.csv").write_text("my numbers\n")
    with pytest.raises(CharnnError, match="not written by charnn"):
        write(sat, mine)
    assert (mine / "saturation.csv").read_text() == "my numbers\n"


def test_saturation_counts_gates_below_a_tenth_and_above_nine_tenths(tmp_path):
    """The paper's thresholds, pinned: gates counted by hand from the step-by-step pass, on a model
    whose gates take every value (so gates between 0.1 and 0.2, or 0.8 and 0.9, are there)."""
    run, text = _hand_set_run(tmp_path)
    m = ckpt.load(run)
    with torch.no_grad():  # scale the weights up and drop the pinned biases: gates spread over (0, 1)
        weights = {k: (v * 4 if "weight" in k else torch.randn_like(v)) for k, v in m.weights.items()}
    ckpt.save(run / ckpt.BEST, m.config, m.vocab, _with(m, weights), {})
    subject = open_subject(run, text=str(text))
    sat = gate_saturation(subject, streams=1)  # one exact pass from the zero state
    with torch.no_grad():
        _, _, rec = subject.model.forward_steps(torch.as_tensor(subject.ids.astype(np.int64))[None])
    for g in ("i", "f", "o"):
        v = rec[g][:, 0].double()  # (L, T, H)
        assert np.allclose(sat.left[g], (v < 0.1).double().mean(1).numpy())
        assert np.allclose(sat.right[g], (v > 0.9).double().mean(1).numpy())
    v = torch.cat([rec[g].flatten() for g in ("i", "f", "o")])
    assert ((v > 0.1) & (v < 0.2)).sum() > 50 and ((v > 0.8) & (v < 0.9)).sum() > 50


def _with(loaded, weights):
    model = CharRNN(loaded.config.model)
    model.load_state_dict(weights)
    return model


def test_gru_has_reset_and_update_gates_and_rnn_has_none(tmp_path):
    run, text = _hand_set_run(tmp_path, "gru")
    assert gate_saturation(open_subject(run, text=str(text))).gates == ("r", "z")
    run2, _ = _hand_set_run(tmp_path / "x" if (tmp_path / "x").mkdir() is None else tmp_path, "rnn")
    with pytest.raises(CharnnError, match="no gates"):
        gate_saturation(open_subject(run2, text=str(text)))


def test_text_with_characters_the_model_lacks_is_refused(tmp_path):
    run, _ = _hand_set_run(tmp_path)
    other = tmp_path / "other.txt"
    other.write_text("xyz")
    with pytest.raises(CharnnError, match="lacks"):
        open_subject(run, text=str(other))


def _inside_outside(subject, layer: int, cell: int):
    """A cell's mean value (on the pages' scale: an LSTM's tanh(c)) inside and outside quotes."""
    from charnn.inspect.activations import record_all
    from charnn.inspect.features import compute

    q = "c" if subject.model.cfg.cell == "lstm" else "h"  # what steering holds
    acts = record_all(subject.model, subject.ids, (q,)).acts[q][layer, :, cell].numpy()
    inside = next(f for f in compute(subject.text) if f.name == "quotes").values > 0
    clip = lambda v: float(np.clip(v, -0.98, 0.98))  # noqa: E731
    return clip(acts[inside].mean()), clip(acts[~inside].mean())


def _upper_share(texts) -> float:
    letters = [ch for t in texts for ch in t if ch.isalpha()]
    return sum(ch.isupper() for ch in letters) / max(1, len(letters))


@pytest.mark.slow
def test_clamping_the_quote_cells_makes_the_model_write_as_if_inside_or_outside(quotes):
    """Upper case inside quotes, lower case outside: held at their inside values, the quote cells
    make the model write upper case with no quote open; held at their outside values, lower case
    inside an open quote."""
    from charnn.sample import parse_clamp, sample_text

    subject, ranked = quotes
    m, v, cfg = subject.model, subject.vocab, subject.model.cfg

    def upper(prime, held=()):
        spec = ",".join(f"{layer}:{cell}={value}" for layer, cell, value in held)
        return _upper_share(sample_text(m, v, length=60, num=16, seed=1, prime=prime, temperature=0.8,
                                        clamped=parse_clamp(spec, cfg)))

    closed, opened = "abc de fgh ", 'abc "ABC DE '
    free_closed, free_open = upper(closed), upper(opened)
    assert free_closed < 0.15 and free_open > 0.5
    # the cell inspect find ranks first moves the model a long way on its own...
    best = ranked["quotes"].top[0]
    inside, outside = _inside_outside(subject, best.layer, best.cell)
    assert upper(closed, [(best.layer, best.cell, inside)]) > max(0.3, 5 * free_closed)
    assert upper(opened, [(best.layer, best.cell, outside)]) < free_open / 2
    # ...and this small model keeps the state in several cells: held together, they decide it
    cells = sorted({(t.layer, t.cell) for t in ranked["quotes"].top if abs(t.r) >= 0.95})
    assert len(cells) >= 2
    values = {c: _inside_outside(subject, *c) for c in cells}
    assert upper(closed, [(*c, values[c][0]) for c in cells]) > 0.8
    assert upper(opened, [(*c, values[c][1]) for c in cells]) < 0.2
    # ablation with --mode value:V scores the same intervention: the outside value hurts inside quotes
    rep = ablate(subject, [(best.layer, best.cell)], f"value:{outside}")
    assert rep.features["quotes"][1].delta > 3 * max(rep.features["quotes"][2].delta, 0.0)


def test_a_clamp_to_the_value_a_cell_holds_anyway_changes_no_sample():
    from charnn.config import ModelConfig
    from charnn.sample import parse_clamp, sample_text

    torch.manual_seed(0)
    m = CharRNN(ModelConfig(cell="lstm", layers=1, hidden=8, embed=4, vocab_size=6)).eval()
    H = 8
    with torch.no_grad():  # cell 2: forget gate shut, input gate open, candidate tanh(0.5): c = tanh(0.5) always
        for w in (m.rnn.weight_ih_l0, m.rnn.weight_hh_l0):
            w[[2, H + 2, 2 * H + 2]] = 0
        m.rnn.bias_ih_l0[2], m.rnn.bias_ih_l0[H + 2], m.rnn.bias_ih_l0[2 * H + 2] = 30.0, -30.0, 0.5
        m.rnn.bias_hh_l0[[2, H + 2, 2 * H + 2]] = 0
    vocab = Vocab([10, 97, 98, 99, 100, 101])
    own = float(np.tanh(np.tanh(0.5)))
    free = sample_text(m, vocab, length=300, num=4, seed=3)
    held = sample_text(m, vocab, length=300, num=4, seed=3, clamped=parse_clamp(f"0:2={own}", m.cfg))
    other = sample_text(m, vocab, length=300, num=4, seed=3, clamped=parse_clamp("0:2=-0.9", m.cfg))
    assert held == free and other != free


@pytest.mark.parametrize("mode", ["value:1", "value:x", "half"])
def test_bad_ablation_modes_say_what_to_use(quotes, mode):
    subject, ranked = quotes
    with pytest.raises(CharnnError, match="--mode"):
        ablate(subject, [(0, 0)], mode)
