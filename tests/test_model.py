import pytest
import torch

from charnn.config import ModelConfig
from charnn.model import CharRNN, detach_state

CELLS = ["lstm", "gru", "rnn"]


def make(cell, layers=2, hidden=12, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return CharRNN(ModelConfig(cell=cell, layers=layers, hidden=hidden, embed=8, dropout=dropout, vocab_size=11))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 3])
def test_step_path_equals_fused_kernels(cell, layers):
    m = make(cell, layers, dropout=0.3).eval()
    x = torch.randint(0, 11, (3, 17))
    with torch.no_grad():
        fused, fstate = m(x)
        steps, sstate, rec = m.forward_steps(x)
    torch.testing.assert_close(steps, fused, atol=1e-5, rtol=1e-5)
    if cell == "lstm":
        torch.testing.assert_close(sstate[0], fstate[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sstate[1], fstate[1], atol=1e-5, rtol=1e-5)
        assert set(rec) == {"h", "c", "i", "f", "g", "o"}
        # The recorded last h and c are the final state.
        torch.testing.assert_close(rec["c"][:, :, -1], fstate[1], atol=1e-5, rtol=1e-5)
        assert ((rec["f"] > 0) & (rec["f"] < 1)).all()
    else:
        torch.testing.assert_close(sstate, fstate, atol=1e-5, rtol=1e-5)
        assert set(rec) == ({"h", "r", "z", "n"} if cell == "gru" else {"h"})
    assert rec["h"].shape == (layers, 3, 17, 12)


@pytest.mark.parametrize("cell", CELLS)
def test_step_path_matches_independent_cells(cell):
    """The one-layer step path against torch's own single-step cells with copied weights."""
    m = make(cell, layers=1).eval()
    ref = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell, "rnn": torch.nn.RNNCell}[cell](8, 12)
    ref.load_state_dict({k.replace("_l0", ""): v for k, v in m.rnn.state_dict().items()})
    x = torch.randint(0, 11, (2, 9))
    with torch.no_grad():
        _, _, rec = m.forward_steps(x)
        emb = m.embed(x)
        h = torch.zeros(2, 12)
        c = torch.zeros(2, 12)
        for t in range(9):
            if cell == "lstm":
                h, c = ref(emb[:, t], (h, c))
            else:
                h = ref(emb[:, t], h)
            torch.testing.assert_close(rec["h"][0, :, t], h, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_state_carried_over_chunks_equals_one_pass(cell):
    m = make(cell).eval()
    x = torch.randint(0, 11, (2, 30))
    with torch.no_grad():
        whole, _ = m(x)
        state, parts = None, []
        for chunk in x.split(7, dim=1):
            out, state = m(chunk, state)
            parts.append(out)
    torch.testing.assert_close(torch.cat(parts, 1), whole, atol=1e-5, rtol=1e-5)


def test_lstm_forget_bias_is_one():
    m = make("lstm", layers=2, hidden=5)
    for layer in range(2):
        total = getattr(m.rnn, f"bias_ih_l{layer}") + getattr(m.rnn, f"bias_hh_l{layer}")
        assert torch.allclose(total[5:10], torch.ones(5))


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_of_both_paths_agree(cell):
    m = make(cell, layers=2, hidden=6).double().eval()
    x = torch.randint(0, 11, (2, 5))
    m.zero_grad()
    m(x)[0].square().sum().backward()
    fused = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    m.forward_steps(x)[0].square().sum().backward()
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.grad, fused[n], atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("cell", CELLS)
def test_step_path_numerical_gradient(cell):
    """Analytic gradients of the step path against finite differences, w.r.t. the initial state."""
    m = make(cell, layers=2, hidden=3).double().eval()
    x = torch.randint(0, 11, (1, 4))
    shape = (2, 1, 3)
    h0 = torch.randn(shape, dtype=torch.double, requires_grad=True)
    c0 = torch.randn(shape, dtype=torch.double, requires_grad=True)

    def f(h, c):
        state = (h, c) if cell == "lstm" else h
        return m.forward_steps(x, state)[0]

    assert torch.autograd.gradcheck(f, (h0, c0))


def test_init_state_and_detach():
    m = make("lstm")
    s = m.init_state(4)
    assert isinstance(s, tuple) and s[0].shape == (2, 4, 12)
    assert make("gru").init_state(4).shape == (2, 4, 12)
    h = torch.ones(1, requires_grad=True) * 2
    assert not detach_state((h, h))[0].requires_grad


def test_a_capped_embedding_starts_with_the_input_signal_of_the_asked_width():
    """fit_vocab caps a 256-wide embedding at 16 symbols; the first layer's gate inputs keep their spread."""
    def gate_input_std(cfg, embed_std):
        torch.manual_seed(0)
        m = CharRNN(cfg, embed_std)
        return (m.embed.weight @ m.rnn.weight_ih_l0.T).std().item()

    wide = ModelConfig(cell="lstm", layers=1, hidden=64, embed=256, dropout=0.0, vocab_size=16)
    capped = ModelConfig(cell="lstm", layers=1, hidden=64, embed=256, dropout=0.0)
    std = capped.fit_vocab(16)
    assert capped.embed == 16 and std == pytest.approx(4.0)
    assert gate_input_std(capped, std) == pytest.approx(gate_input_std(wide, 1.0), rel=0.2)
    assert gate_input_std(capped, 1.0) < 0.4 * gate_input_std(wide, 1.0)  # what the scale is for
