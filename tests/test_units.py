"""A transformer's units for the analyses: its MLP neurons are recorded as evaluation reads the
text, clamped the same way in sampling and in recording, and its heads can be silenced; find
ranks neurons by the same correlation a reader would compute."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charnn.config import ModelConfig
from charnn.inspect.activations import Clamp, record_all
from charnn.model import build
from charnn.stepper import make_stepper
from charnn.transformer import Probe


def small(block=8, layers=2, heads=2, embed=16, seed=0):
    torch.manual_seed(seed)
    return build(ModelConfig(cell="transformer", layers=layers, heads=heads, embed=embed, hidden=embed, block=block,
                             vocab_size=11)).eval()


def ids_of(n, seed=0):
    return np.random.default_rng(seed).integers(0, 11, n)


def test_the_units_are_the_mlp_neurons_after_gelu():
    m = small(block=16)
    ids = ids_of(12)
    seen = {}
    hooks = [b.fc.register_forward_hook(lambda mod, i, out, k=k: seen.__setitem__(k, F.gelu(out[0])))
             for k, b in enumerate(m.blocks)]
    with torch.no_grad():
        logits, _ = m(torch.as_tensor(ids)[None])
    for h in hooks:
        h.remove()
    rec = record_all(m, ids)
    assert m.cfg.units == 64 and rec.acts["m"].shape == (2, 12, 64)
    for k in range(2):
        assert torch.allclose(rec.acts["m"][k], seen[k], atol=1e-6)
    assert torch.allclose(rec.logp, torch.log_softmax(logits[0], -1), atol=1e-5)


@pytest.mark.parametrize("block", [8, 7, 1])
def test_reading_in_parallel_pieces_equals_one_pass(block):
    """Pieces start on the window's slide period and warm up a block: the same context as one pass."""
    m = small(block=block)
    ids = ids_of(400)
    one = record_all(m, ids)
    pieces = record_all(m, ids, streams=6, warmup=10, chunk=16)
    assert torch.allclose(one.logp, pieces.logp, atol=1e-5)
    assert torch.allclose(one.acts["m"], pieces.acts["m"], atol=1e-5)
    with torch.no_grad():  # and what is recorded is what evaluation scores: the forward's sliding read
        logits, _ = m(torch.as_tensor(ids)[None])
    assert torch.allclose(one.logp, torch.log_softmax(logits[0], -1), atol=1e-5)


@pytest.mark.parametrize("block", [8, 5])
def test_a_clamp_holds_the_same_neurons_when_sampling_and_when_recording(block):
    m = small(block=block)
    ids = ids_of(30)
    idx, val = torch.tensor([3, 40]), torch.tensor([2.0, -0.1])
    held = record_all(m, ids, clamps={1: Clamp(idx, val, None)})
    assert (held.acts["m"][1][:, idx] == val).all()
    free = record_all(m, ids)
    assert torch.equal(held.acts["m"][0], free.acts["m"][0])  # the layer below is untouched
    assert not torch.allclose(held.logp, free.logp, atol=1e-3)
    stepper = make_stepper(m, m.init_state(1), {1: (idx, val)})  # past the slide too: 30 > block
    steps = torch.stack([stepper.step(torch.tensor([int(i)]))[0] for i in ids])
    assert torch.allclose(torch.log_softmax(steps, -1), held.logp, atol=1e-5)


def test_silencing_a_head_equals_zeroing_its_share_of_the_output_projection():
    m = small(block=8, heads=4, embed=16)
    ids = ids_of(40)
    muted = record_all(m, ids, mute={1: torch.tensor([2])})
    hd = 16 // 4
    with torch.no_grad():
        m.blocks[1].attn.proj.weight[:, 2 * hd:3 * hd] = 0  # head 2's output never reaches the residual stream
        logits, _ = m(torch.as_tensor(ids)[None])
    assert torch.allclose(muted.logp, torch.log_softmax(logits[0], -1), atol=1e-5)
    assert not torch.allclose(muted.logp, record_all(small(block=8, heads=4, embed=16), ids).logp, atol=1e-3)


def test_a_probe_keeps_nothing_it_was_not_asked_for():
    m = small()
    x = torch.as_tensor(ids_of(6))[None]
    with torch.no_grad():
        _, _, kept = m.trunk(x, None, Probe(mlp=True))
        _, _, none = m.trunk(x, None)
    assert set(kept) == {"mlp"} and kept["mlp"].shape == (2, 1, 6, 64) and none is None


def test_find_ranks_neurons_by_their_correlation_with_a_feature(tmp_path):
    from charnn import checkpoint as ckpt
    from charnn.config import RunConfig
    from charnn.inspect import features as feats
    from charnn.inspect.find import find_cells
    from charnn.subject import open_subject
    from charnn.vocab import Vocab

    text = "".join(np.random.default_rng(1).choice(list('ab "c(d)\n'), 600))
    vocab = Vocab(sorted({ord(c) for c in text}))
    torch.manual_seed(0)
    m = build(ModelConfig(cell="transformer", layers=2, heads=2, embed=16, hidden=16, block=16,
                          vocab_size=len(vocab))).eval()
    ckpt.save(tmp_path / "m.safetensors", RunConfig(model=m.cfg), vocab, m, {"step": 0})
    (tmp_path / "t.txt").write_text(text)
    subject = open_subject(tmp_path / "m.safetensors", text=str(tmp_path / "t.txt"))
    (res,) = [r for r in find_cells(subject, top=3) if r.name == "quotes"]
    acts = record_all(subject.model, subject.ids).acts["m"]
    f = [x for x in feats.compute(subject.text) if x.name == "quotes"][0].values
    r_all = np.array([[np.corrcoef(acts[k, :, j].numpy(), f)[0, 1] for j in range(64)] for k in range(2)])
    best = np.unravel_index(np.nanargmax(np.abs(r_all)), r_all.shape)
    top = res.top[0]
    assert (top.layer, top.cell, top.quantity) == (best[0], best[1], "m")
    assert top.r == pytest.approx(r_all[best], abs=1e-4)


def test_the_cells_page_shows_every_neuron_of_every_block(tmp_path):
    import base64

    from charnn import checkpoint as ckpt
    from charnn.config import RunConfig
    from charnn.subject import open_subject
    from charnn.vocab import Vocab
    from charnn.web.pages import cells_page_data

    text = "ab cd\nef (gh)\n" * 5
    vocab = Vocab(sorted({ord(c) for c in text}))
    torch.manual_seed(0)
    m = build(ModelConfig(cell="transformer", layers=2, heads=2, embed=8, hidden=8, block=8,
                          vocab_size=len(vocab))).eval()
    ckpt.save(tmp_path / "m.safetensors", RunConfig(model=m.cfg), vocab, m, {"step": 0})
    (tmp_path / "t.txt").write_text(text)
    subject = open_subject(tmp_path / "m.safetensors", text=str(tmp_path / "t.txt"))
    data = cells_page_data(subject, jump=False)
    assert data["hidden"] == 32 and [q["key"] for q in data["quantities"]] == ["m"]
    assert "transformer 2x8, 2 heads, block 8" in data["title"]
    acts = record_all(subject.model, subject.ids).acts["m"]
    for layer in range(2):
        shown = np.frombuffer(base64.b64decode(data["acts"][f"{layer}:m"]), np.uint8).reshape(32, len(text))
        want = ((acts[layer].T + 1) / 2).clamp(0, 1).mul(255).round().numpy()
        assert np.array_equal(shown, want.astype(np.uint8))
