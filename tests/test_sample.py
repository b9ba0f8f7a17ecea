import pytest
import torch

from charnn.config import ModelConfig
from charnn.errors import CharnnError
from charnn.model import CharRNN
from charnn.sample import filter_logits, sample_next, sample_text
from charnn.vocab import Vocab

VOCAB = Vocab([ord(c) for c in "\nabcdefgh"])


def model(seed=0):
    torch.manual_seed(seed)
    return CharRNN(ModelConfig(cell="gru", layers=1, hidden=16, embed=8, vocab_size=len(VOCAB))).eval()


def test_temperature_zero_is_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 2.9]])
    g = torch.Generator().manual_seed(0)
    assert sample_next(logits, g, temperature=0).tolist() == [1, 0]


def test_top_k_keeps_exactly_k():
    logits = torch.randn(4, 50)
    f = filter_logits(logits, top_k=5)
    assert (torch.isfinite(f).sum(-1) == 5).all()
    kept = torch.isfinite(f)
    assert (logits[kept].view(4, 5).min(-1).values >= logits.topk(5).values[:, -1]).all()


def test_top_p_keeps_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    f = filter_logits(probs.log(), top_p=0.7)
    assert torch.isfinite(f).tolist() == [[True, True, False, False]]
    f = filter_logits(probs.log(), top_p=0.1)
    assert torch.isfinite(f).tolist() == [[True, False, False, False]]


def test_sampling_follows_the_distribution():
    logits = torch.tensor([[0.0, 1.0, 2.0]]).expand(20000, 3)
    g = torch.Generator().manual_seed(1)
    counts = torch.bincount(sample_next(logits, g), minlength=3).float() / 20000
    torch.testing.assert_close(counts, torch.softmax(logits[0], -1), atol=0.02, rtol=0)


def test_same_seed_same_text_and_different_seed_differs():
    m = model()
    a = sample_text(m, VOCAB, length=200, seed=5, temperature=1.0)
    b = sample_text(m, VOCAB, length=200, seed=5, temperature=1.0)
    c = sample_text(m, VOCAB, length=200, seed=6, temperature=1.0)
    assert a == b and a != c
    assert len(a[0]) == 200


def test_batched_streams_are_independent_samples():
    m = model()
    out = sample_text(m, VOCAB, length=100, num=3, seed=1, temperature=1.0)
    assert len(out) == 3 and len(set(out)) == 3


def test_prime_conditions_the_sample():
    m = model()
    a = sample_text(m, VOCAB, length=50, prime="abc", seed=0, temperature=0)
    b = sample_text(m, VOCAB, length=50, prime="hhh", seed=0, temperature=0)
    assert a != b


def test_unknown_prime_characters_are_named():
    with pytest.raises(CharnnError, match=r"never seen 2 characters: 'Q', 'z'"):
        sample_text(model(), VOCAB, prime="abQz")


@pytest.mark.parametrize("kw,msg", [({"temperature": -1}, "--temperature"), ({"top_p": 0}, "--top-p"),
                                    ({"top_k": -2}, "--top-k"), ({"num": 0}, "--num")])
def test_bad_options(kw, msg):
    with pytest.raises(CharnnError, match=msg):
        sample_text(model(), VOCAB, **kw)


def _naive(m, vocab, length, num, seed, temperature):
    """The slow reference: nn.LSTM (or GRU / RNN) called once per character."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(vocab.encode("\n"), dtype=torch.long).unsqueeze(0).expand(num, -1)
    out = []
    with torch.no_grad():
        logits, state = m(x)
        for _ in range(length):
            nxt = sample_next(logits[:, -1], gen, temperature)
            out.append(nxt.tolist())
            logits, state = m(nxt.unsqueeze(1), state)
    return out


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("num", [1, 5])
def test_fast_step_path_gives_exactly_the_samples_of_the_slow_path(cell, num):
    from charnn.sample import generate

    torch.manual_seed(1)
    m = CharRNN(ModelConfig(cell=cell, layers=3, hidden=24, embed=8, dropout=0.0, vocab_size=12)).eval()
    with torch.no_grad():
        for p in m.rnn.parameters():
            p.mul_(4)  # sharper distributions than a fresh model's, like a trained one
    vocab = Vocab([ord(c) for c in "\nabcdefghij "])
    for seed in range(3):
        fast = list(generate(m, vocab, length=300, num=num, seed=seed, temperature=1.0))
        assert fast == _naive(m, vocab, 300, num, seed, 1.0)


def test_stepper_state_is_the_fused_state():
    from charnn.stepper import Stepper

    torch.manual_seed(0)
    m = CharRNN(ModelConfig(cell="lstm", layers=2, hidden=16, embed=8, dropout=0.0, vocab_size=10)).eval()
    x = torch.randint(0, 10, (3, 40))
    with torch.no_grad():
        logits, (h, c) = m(x)
        st = Stepper(m, m.init_state(3))
        for t in range(40):
            last = st.step(x[:, t])
    torch.testing.assert_close(last, logits[:, -1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(st.state()[0], h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(st.state()[1], c, atol=1e-5, rtol=1e-5)


def test_stream_yields_each_piece_as_it_is_generated(monkeypatch):
    from charnn import sample as sample_mod
    from charnn.sample import stream

    m = model()
    steps = []
    real = sample_mod.Stepper.step
    monkeypatch.setattr(sample_mod.Stepper, "step", lambda self, ids: (steps.append(1), real(self, ids))[1])
    pieces = stream(m, VOCAB, length=500, seed=1, temperature=1.0)
    first = next(pieces)
    assert len(first) == 1 and len(steps) <= 1  # one character out, not 500 generated first
    rest = "".join(pieces)
    assert first + rest == sample_text(m, VOCAB, length=500, seed=1, temperature=1.0)[0]  # same text as batch


def test_stream_stops_right_after_the_stop_string():
    from charnn.sample import stream

    m = model()
    full = sample_text(m, VOCAB, length=400, seed=3, temperature=1.0)[0]
    stop = full[150:152]  # a two-character string that occurs; cut at its first occurrence
    cut = full.index(stop) + len(stop)
    assert "".join(stream(m, VOCAB, length=400, seed=3, temperature=1.0, stop=stop)) == full[:cut]
    assert sample_text(m, VOCAB, length=400, seed=3, temperature=1.0, stop=stop)[0] == full[:cut]
    with pytest.raises(CharnnError, match="never seen"):
        stream(m, VOCAB, prime="Q!")  # refused when called, before any piece


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_clamped_cells_hold_their_value_and_the_reader_and_the_sampler_agree(cell):
    from charnn.inspect.activations import Clamp, record_all
    from charnn.sample import parse_clamp
    from charnn.stepper import Stepper

    torch.manual_seed(3)
    m = CharRNN(ModelConfig(cell=cell, layers=2, hidden=12, embed=6, vocab_size=9)).eval()
    clamped = parse_clamp("0:3=0.9,1:0=-0.5,1:7=0.25", m.cfg)
    ids = torch.randint(0, 9, (40,))
    stepper = Stepper(m, m.init_state(1), clamped)
    logits = []
    for i in ids:
        logits.append(stepper.step(i[None])[0])
        shown = {"lstm": lambda k: torch.tanh(stepper.c[k][0]), "gru": lambda k: stepper.h[k][0],
                 "rnn": lambda k: stepper.h[k][0]}[cell]
        assert torch.allclose(shown(0)[3], torch.tensor(0.9), atol=1e-6)
        assert torch.allclose(shown(1)[[0, 7]], torch.tensor([-0.5, 0.25]), atol=1e-6)
    rec = record_all(m, ids.numpy(), quantities=("h",), clamps=Clamp.from_clamped(clamped, cell))
    assert torch.allclose(torch.log_softmax(torch.stack(logits), -1), rec.logp, atol=1e-5)
    free = torch.log_softmax(m(ids[None])[0][0], -1)
    assert not torch.allclose(free, rec.logp, atol=1e-3)  # holding cells changes the predictions
    assert parse_clamp("", m.cfg) == {}


@pytest.mark.parametrize("spec, says", [
    ("0:3", "is not LAYER:CELL=VALUE"), ("a:b=c", "is not LAYER:CELL=VALUE"), ("2:0=0.5", "layer 2 does not exist"),
    ("0:12=0.5", "cell 12 does not exist"), ("0:1=1", "strictly between -1 and 1"), ("0:1=0.1,0:1=0.2", "twice"),
])
def test_bad_clamps_say_what_is_wrong(spec, says):
    from charnn.errors import CharnnError
    from charnn.sample import parse_clamp

    with pytest.raises(CharnnError, match=says):
        parse_clamp(spec, ModelConfig(cell="lstm", layers=2, hidden=12, embed=6, vocab_size=9))


def test_a_tiny_temperature_is_argmax_not_an_overflow():
    logits = torch.tensor([[3.0, -2.0, 5.0, 4.999]])
    g = torch.Generator().manual_seed(0)
    assert sample_next(logits, g, temperature=3e-277).tolist() == [2]
    assert torch.isfinite(torch.softmax(filter_logits(logits, temperature=1e-300), -1)).all()
