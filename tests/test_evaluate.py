import math

import numpy as np
import torch

from charnn.config import ModelConfig
from charnn.evaluate import evaluate
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
    # Parallel pieces with a warm-up context longer than the text reproduce it too.
    par = evaluate(m, ids, streams=8, seq_len=16)
    assert par.chars == 499
    assert abs(par.loss - ref) < 0.05  # untrained model: context barely matters
    assert math.isclose(one.bpc, one.loss / math.log(2)) and math.isclose(one.perplexity, math.exp(one.loss))


def test_uniform_model_scores_log_vocab():
    m = CharRNN(ModelConfig(cell="rnn", layers=1, hidden=4, embed=4, vocab_size=9)).eval()
    with torch.no_grad():
        m.head.weight.zero_()
        m.head.bias.zero_()
    s = evaluate(m, np.arange(100) % 9)
    assert math.isclose(s.loss, math.log(9), rel_tol=1e-6)
    assert math.isclose(s.perplexity, 9, rel_tol=1e-5)
