"""sample --beam K (the most likely continuation: K = 1 is greedy, K > 1 never less likely) and
--prime-file."""

import math

import pytest
import torch

from charnn.config import ModelConfig
from charnn.errors import CharnnError
from charnn.model import build
from charnn.sample import beam_search, sample_text
from charnn.vocab import Vocab

VOCAB = Vocab([ord(c) for c in "abcde\n"])


def model(cell="lstm", seed=0):
    torch.manual_seed(seed)
    cfg = (ModelConfig(cell="transformer", layers=2, heads=2, embed=16, hidden=16, block=8, vocab_size=6)
           if cell == "transformer" else ModelConfig(cell=cell, layers=1, hidden=16, embed=6, vocab_size=6))
    m = build(cfg).eval()
    with torch.no_grad():  # sharper distributions than an untrained model's, so that paths differ
        for p in m.parameters():
            p.mul_(4)
    return m


def likelihood(m, prime: str, text: str) -> float:
    """log P(text | prime) by one plain forward pass: an independent check of the beam's score."""
    ids = torch.as_tensor(VOCAB.encode(prime + text))[None]
    with torch.no_grad():
        lp = torch.log_softmax(m(ids)[0][0].double(), -1)
    P = len(prime)
    return float(sum(lp[P - 1 + t, ids[0, P + t]] for t in range(len(text))))


@pytest.mark.parametrize("cell", ["lstm", "gru", "transformer"])
def test_beam_one_is_greedy_and_a_wider_beam_is_never_less_likely(cell):
    for seed in range(4):
        m = model(cell, seed)
        greedy = sample_text(m, VOCAB, length=20, temperature=0, prime="ab")[0]
        text, nats = beam_search(m, VOCAB, "ab", 20, 1)
        assert text == greedy and nats == pytest.approx(likelihood(m, "ab", greedy), abs=1e-4)
        for k in (2, 5):
            text_k, nats_k = beam_search(m, VOCAB, "ab", 20, k)
            assert nats_k >= nats - 1e-9
            assert nats_k == pytest.approx(likelihood(m, "ab", text_k), abs=1e-4)  # the score is the text's own


def test_a_wide_beam_finds_a_likelier_text_than_greedy_somewhere():
    gains = []
    for seed in range(8):
        m = model("lstm", seed)
        gains.append(beam_search(m, VOCAB, "a", 15, 8)[1] - beam_search(m, VOCAB, "a", 15, 1)[1])
    assert max(gains) > 1e-3  # otherwise the beam would be greedy in disguise


def test_bad_beams_are_refused():
    with pytest.raises(CharnnError, match="--beam must be from 1 to 64"):
        beam_search(model(), VOCAB, "a", 5, 0)
    assert math.isfinite(beam_search(model(), VOCAB, "", 3, 3)[1])
