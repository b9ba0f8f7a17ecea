import math

import numpy as np
import torch

from charnn.config import ModelConfig
from charnn.evaluate import evaluate, evaluate_rows
from charnn.model import CharRNN


def test_matches_one_long_pass():
    torch.manual_seed(0)
    m = CharRNN(ModelConfig(cell="lstm", layers=2, hidden=16, embed=8, vocab_size=7)).eval()
    ids = np.random.default_rng(0).integers(0, 7, 500)
    x = torch.as_tensor(ids[:-1]).unsqueeze(0)
    y = torch.as_tensor(ids[1:])
    with torch.no_grad():
        ref = torch.nn.functional.cross_entropy(m(x)[0][0], y).item()
    one = evaluate(m, ids, streams=1, seq_len=33)
    assert one.chars == 499
    assert math.isclose(one.loss, ref, rel_tol=1e-5)
    # Parallel pieces, each read after 100 characters of warm-up context, reproduce it too: the
    # error is ~1e-7 here, against 5e-4 with no warm-up (an untrained model forgets in ~100 steps).
    par = evaluate(m, ids, streams=8, seq_len=16)
    assert par.chars == 499
    assert abs(par.loss - ref) < 1e-5
    assert math.isclose(one.bpc, one.loss / math.log(2)) and math.isclose(one.perplexity, math.exp(one.loss))


def test_rows_read_side_by_side_score_as_each_read_alone():
    """evaluate_rows (attribution's batch of one document under every label) gives each row the
    score evaluate gives it alone, for a recurrent model and a transformer (sliding past its block)."""
    from charnn.transformer import CharTransformer

    torch.manual_seed(0)
    models = [CharRNN(ModelConfig(cell="lstm", layers=2, hidden=16, embed=8, vocab_size=7)).eval(),
              CharTransformer(ModelConfig(cell="transformer", layers=2, heads=2, embed=16, hidden=16, block=32,
                                          vocab_size=7)).eval()]
    rng = np.random.default_rng(1)
    rows = [rng.integers(0, 7, 300) for _ in range(3)]
    for m in models:
        got = evaluate_rows(m, rows, seq_len=40)
        for row, g in zip(rows, got):
            alone = evaluate(m, row, streams=1, seq_len=40)
            assert g.chars == alone.chars == 299
            assert math.isclose(g.loss, alone.loss, rel_tol=1e-5), (m.cfg.cell, g.loss, alone.loss)
        assert len({round(g.loss, 6) for g in got}) == 3  # three different texts, three scores


def test_uniform_model_scores_log_vocab():
    m = CharRNN(ModelConfig(cell="rnn", layers=1, hidden=4, embed=4, vocab_size=9)).eval()
    with torch.no_grad():
        m.head.weight.zero_()
        m.head.bias.zero_()
    s = evaluate(m, np.arange(100) % 9)
    assert math.isclose(s.loss, math.log(9), rel_tol=1e-6)
    assert math.isclose(s.perplexity, 9, rel_tol=1e-5)


def test_char_losses_score_each_position_as_evaluate_does():
    from charnn.evaluate import char_losses

    torch.manual_seed(1)
    m = CharRNN(ModelConfig(cell="gru", layers=1, hidden=12, embed=6, vocab_size=5)).eval()
    ids = np.random.default_rng(1).integers(0, 5, 700)
    nll = char_losses(m, ids, streams=4, seq_len=32)
    assert np.isnan(nll[-1]) and np.isfinite(nll[:-1]).all()
    assert math.isclose(float(nll[:-1].mean()), evaluate(m, ids, streams=4, seq_len=32).loss, rel_tol=1e-6)
    x = torch.as_tensor(ids[:-1]).unsqueeze(0)
    with torch.no_grad():
        ref = torch.nn.functional.cross_entropy(m(x)[0][0], torch.as_tensor(ids[1:]), reduction="none").numpy()
    np.testing.assert_allclose(nll[:-1], ref, atol=1e-4)  # each position, not just the mean


def test_scoring_refuses_a_model_in_training_mode():
    import pytest

    m = CharRNN(ModelConfig(cell="lstm", layers=2, hidden=8, embed=4, vocab_size=5, dropout=0.5))
    with pytest.raises(ValueError, match="eval mode"):
        evaluate(m, np.arange(50) % 5)
