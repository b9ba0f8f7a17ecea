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


# ---- regularisers that keep the fused kernels: --weight-drop, --embed-drop, --variational -------

def _pair(cell="lstm", **drops):
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, layers=2, hidden=12, embed=6, vocab_size=9, **drops)
    plain = CharRNN(ModelConfig(cell=cell, layers=2, hidden=12, embed=6, vocab_size=9))
    model = CharRNN(cfg)
    model.load_state_dict(plain.state_dict())
    return model, plain


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_regularisers_are_off_in_eval_mode(cell):
    model, plain = _pair(cell, weight_drop=0.5, embed_drop=0.3, variational=0.4)
    x = torch.randint(0, 9, (3, 7))
    assert torch.equal(model.eval()(x)[0], plain.eval()(x)[0])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_weight_drop_masks_the_recurrent_weights_once_per_batch(cell):
    p = 0.5
    model, plain = _pair(cell, weight_drop=p)
    before = model.rnn.weight_hh_l0.detach().clone()
    x = torch.randint(0, 9, (3, 7))
    torch.manual_seed(5)
    masked = {k: torch.nn.functional.dropout(getattr(plain.rnn, f"weight_hh_l{k}"), p) for k in range(2)}
    with torch.no_grad():  # the same masks, drawn in the same order, written into the plain model
        for k in range(2):
            getattr(plain.rnn, f"weight_hh_l{k}").copy_(masked[k])
    torch.manual_seed(5)
    out = model.train()(x)[0]
    assert torch.allclose(out, plain.train()(x)[0], atol=1e-6)
    out.sum().backward()
    g, kept = model.rnn.weight_hh_l0.grad, masked[0] != 0
    assert (g[~kept] == 0).all() and (g[kept] != 0).float().mean() > 0.9  # dropped weights learn nothing
    assert 0.4 < kept.float().mean() < 0.6
    # the parameter itself is untouched: the dropped copy was swapped in for that call only
    assert isinstance(model.rnn.weight_hh_l0, torch.nn.Parameter) and torch.equal(model.rnn.weight_hh_l0, before)


def test_embedding_drop_removes_whole_symbols():
    p = 0.4
    model, plain = _pair(embed_drop=p)
    x = torch.randint(0, 9, (4, 10))
    torch.manual_seed(3)
    keep = torch.bernoulli(torch.full((9, 1), 1 - p))
    with torch.no_grad():
        plain.embed.weight.mul_(keep / (1 - p))
    torch.manual_seed(3)
    assert torch.allclose(model.train()(x)[0], plain.eval()(x)[0], atol=1e-6)
    assert 0 < keep.sum() < 9


def test_variational_dropout_uses_one_mask_per_sequence():
    from charnn.model import _locked_dropout

    torch.manual_seed(0)
    y = _locked_dropout(torch.ones(64, 50, 32), 0.25)
    assert torch.equal(y, y[:, :1].expand_as(y))  # the same at every step of a sequence
    assert torch.allclose(y.unique(), torch.tensor([0.0, 4 / 3])) and abs(float((y == 0).float().mean()) - 0.25) < 0.03
    assert not torch.equal(y[0], y[1])  # but not the same for every sequence
