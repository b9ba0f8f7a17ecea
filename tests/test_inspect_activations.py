import numpy as np
import pytest
import torch

from charnn.config import ModelConfig
from charnn.inspect.activations import QUANTITIES, Clamp, record, record_all
from charnn.model import CharRNN

CELLS = ["lstm", "gru", "rnn"]


def make(cell, layers=2, hidden=12, seed=0, scale=3.0):
    torch.manual_seed(seed)
    m = CharRNN(ModelConfig(cell=cell, layers=layers, hidden=hidden, embed=8, dropout=0.0, vocab_size=11)).eval()
    with torch.no_grad():  # untrained weights are too small to move gates far from 0.5
        for p in m.rnn.parameters():
            p.mul_(scale)
    return m.eval()


def ids(n, seed=0):
    return np.random.default_rng(seed).integers(0, 11, n)


@pytest.mark.parametrize("cell", CELLS)
def test_record_equals_the_step_by_step_reference(cell):
    m = make(cell, layers=3)
    x = ids(257)
    got = record_all(m, x, chunk=50)  # chunks that do not divide the text: state carried across
    logits, _, ref = m.forward_steps(torch.from_numpy(x)[None])
    assert set(got.acts) == set(QUANTITIES[cell])
    for q, v in got.acts.items():
        want = ref[q][:, 0]
        if q == "c":  # recorded squashed, the paper's convention
            want = torch.tanh(want)
        assert v.shape == (3, 257, 12)
        torch.testing.assert_close(v, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.logp, torch.log_softmax(logits[0], -1), atol=1e-5, rtol=1e-5)
    assert got.positions.tolist() == list(range(257))


@pytest.mark.parametrize("cell", CELLS)
def test_parallel_streams_cover_every_position_once_and_agree_after_warmup(cell):
    m = make(cell, scale=1.0)  # a model whose memory fades (a trained one may remember for long)
    x = ids(3000, seed=1)
    exact = record_all(m, x)
    fast = record_all(m, x, streams=5, warmup=300)
    assert fast.positions.tolist() == list(range(3000))
    # The warm-up makes each piece start with (nearly) the true state: far from stream starts
    # the values agree; the model's own memory fades well within 300 characters.
    for q in exact.acts:
        torch.testing.assert_close(fast.acts[q], exact.acts[q], atol=1e-4, rtol=1e-4)


def test_only_the_asked_quantities_are_kept():
    m = make("lstm")
    chunks = list(record(m, ids(100), quantities=("f",), chunk=30))
    assert [len(c.positions) for c in chunks] == [30, 30, 30, 10]
    assert all(set(c.acts) == {"f"} for c in chunks)


@pytest.mark.parametrize("cell", CELLS)
def test_clamping_nothing_is_the_plain_pass_and_clamped_cells_hold_their_value(cell):
    m = make(cell)
    x = ids(120, seed=2)
    plain = record_all(m, x)
    none = record_all(m, x, clamps={1: Clamp(torch.tensor([], dtype=torch.long), torch.zeros(0), torch.zeros(0))})
    torch.testing.assert_close(none.acts["h"], plain.acts["h"], atol=1e-5, rtol=1e-5)
    held = record_all(m, x, clamps={0: Clamp(torch.tensor([2, 5]), torch.tensor([0.0, 0.5]), torch.tensor([0.0, 0.3]))})
    assert torch.all(held.acts["h"][0, :, 2] == 0) and torch.all(held.acts["h"][0, :, 5] == 0.5)
    if cell == "lstm":
        torch.testing.assert_close(held.acts["c"][0, :, 5], torch.full((120,), float(np.tanh(0.3))))
    # the layer above and the predictions see the change
    assert not torch.allclose(held.acts["h"][1], plain.acts["h"][1])
    assert not torch.allclose(held.logp, plain.logp)


def test_a_chunk_of_a_big_model_stays_small():
    # 3 x 512 LSTM, 64 streams: a chunk's recordings must not grow with the text or the `chunk` asked for
    torch.manual_seed(0)
    m = CharRNN(ModelConfig(cell="lstm", layers=3, hidden=512, embed=16, dropout=0.0, vocab_size=11)).eval()
    gen = record(m, ids(64 * 300), streams=64, warmup=20, chunk=100_000)
    first = next(gen)
    size = sum(v.numel() * v.element_size() for v in first.acts.values())
    assert 0 < size <= 256 << 20
    assert len(first.positions) < 64 * 300
