"""The transformer: its cache against the full forward, causality, the sliding window against an
independent reference, evaluation against a sum of per-character losses, attention rows, sampling
with the cache, training and exact resume, presets."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charnn import checkpoint as ckpt
from charnn.config import PRESETS, ModelConfig, RunConfig, apply_preset
from charnn.errors import CharnnError
from charnn.evaluate import char_losses, evaluate
from charnn.model import build, expected_shapes
from charnn.sample import sample_text
from charnn.trainer import train
from charnn.transformer import Probe
from helpers import tiny_config


def small(block=16, layers=2, heads=2, embed=32, vocab=11, dropout=0.0):
    torch.manual_seed(0)
    cfg = ModelConfig(cell="transformer", layers=layers, heads=heads, embed=embed, hidden=embed, block=block,
                      vocab_size=vocab, dropout=dropout)
    return build(cfg).eval()


def context_before(t: int, block: int) -> int:
    """How many characters the sliding window shows before position t (the module's rule: full
    context up to the block; then the cache is rebuilt from the last block/2 whenever it fills)."""
    if t < block:
        return t
    keep = block // 2
    return keep + (t - block) % (block - keep)


@torch.no_grad()
def reference_logits(m, x: torch.Tensor) -> torch.Tensor:
    """Each position's logits from a fresh full forward over exactly the context the rule gives
    it, with no cache at all: (B, T, V)."""
    out = []
    for t in range(x.shape[1]):
        n = context_before(t, m.cfg.block)
        out.append(m(x[:, t - n:t + 1])[0][:, -1])
    return torch.stack(out, 1)


def test_a_forward_with_the_cache_equals_the_full_forward_at_every_position():
    m = small()
    x = torch.randint(0, 11, (3, 16))
    with torch.no_grad():
        full, _ = m(x)
        state, steps = None, []
        for t in range(16):
            logits, state = m(x[:, t:t + 1], state)
            steps.append(logits)
        pieces, state = [], None
        for a, b in ((0, 5), (5, 6), (6, 16)):  # uneven pieces after the cache
            logits, state = m(x[:, a:b], state)
            pieces.append(logits)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)
    assert torch.allclose(torch.cat(pieces, 1), full, atol=1e-5)
    ids, kv = state
    assert torch.equal(ids, x) and kv.shape == (2, 2, 3, 2, 16, 16)


@pytest.mark.parametrize("block", [16, 7, 1])
def test_past_the_block_the_window_slides_as_documented(block):
    m = small(block=block)
    x = torch.randint(0, 11, (2, 3 * block + 5))
    want = reference_logits(m, x)
    with torch.no_grad():
        state, steps = None, []
        for t in range(x.shape[1]):
            logits, state = m(x[:, t:t + 1], state)
            steps.append(logits)
        whole, _ = m(x)  # one call: the same slides inside it
    assert torch.allclose(torch.cat(steps, 1), want, atol=1e-5)
    assert torch.allclose(whole, want, atol=1e-5)


@pytest.mark.parametrize("block", [8, 7, 1])
def test_the_sampling_stepper_equals_the_forward_past_the_block(block):
    from charnn.stepper import make_stepper

    m = small(block=block)
    x = torch.randint(0, 11, (2, 3 * block + 4))
    with torch.no_grad():
        prime, state = m(x[:, :3])  # the stepper goes on from a cache the forward built
        stepper = make_stepper(m, state)
        steps = [stepper.step(x[:, t]) for t in range(3, x.shape[1])]
        ids, kv = stepper.state()
        _, (want_ids, want_kv) = m(x)
    assert torch.allclose(torch.stack(steps, 1), reference_logits(m, x)[:, 3:], atol=1e-5)
    assert torch.equal(ids, want_ids) and torch.allclose(kv, want_kv, atol=1e-5)


def test_changing_character_t_never_changes_the_logits_before_t():
    m = small(dropout=0.0)
    x = torch.randint(0, 11, (1, 16))
    for mode in ("eval", "train"):
        getattr(m, mode)()
        for t in (0, 7, 15):
            y = x.clone()
            y[0, t] = (y[0, t] + 1) % 11
            with torch.no_grad():
                a, b = m(x)[0], m(y)[0]
            assert torch.equal(a[:, :t], b[:, :t]), (mode, t)
            assert not torch.allclose(a[:, t:], b[:, t:])


def test_attention_rows_sum_to_one_and_look_only_back():
    m = small()
    x = torch.randint(0, 11, (2, 10))
    with torch.no_grad():
        _, _, inside = m.trunk(x, None, Probe(att=True))
        h, _, _ = m.trunk(x, None)
        h2, _, _ = m.trunk(x, None, Probe(att=True))
    att = inside["att"]  # (L, B, heads, T, T)
    assert att.shape == (2, 2, 2, 10, 10)
    assert torch.allclose(att.sum(-1), torch.ones(2, 2, 2, 10), atol=1e-6)
    assert torch.all(att.triu(1) == 0)
    assert torch.allclose(h, h2, atol=1e-5)  # the written-out attention is the one sdpa computes


@torch.no_grad()
def test_evaluation_equals_an_independent_sum_of_per_character_losses():
    m = small(block=8)
    ids = np.random.default_rng(0).integers(0, 11, 200)
    x = torch.as_tensor(ids[None], dtype=torch.long)
    logits = reference_logits(m, x)[0, :-1]
    want = F.cross_entropy(logits, x[0, 1:], reduction="none").double()
    for streams, seq_len in ((1, 256), (1, 5), (3, 16)):
        score = evaluate(m, ids, streams=streams, seq_len=seq_len)
        assert score.chars == 199
        if streams == 1:  # one stream reads the text from its start, as the reference does
            assert score.loss == pytest.approx(float(want.mean()), abs=1e-6)
            per = char_losses(m, ids, streams=1, seq_len=seq_len)
            assert np.allclose(per[:-1], want.numpy(), atol=1e-5)
        else:  # streams start mid-text after a warm-up of a block, each sliding in its own phase
            per = char_losses(m, ids, streams=streams, seq_len=seq_len)
            assert score.loss == pytest.approx(float(np.mean(per[:-1])), abs=1e-6)
            for t in range(199):  # every character read with as much context as the rule allows it
                n_ok = [t] if t < 4 else range(4, min(t, 7) + 1)
                options = [F.cross_entropy(m(x[:, t - n:t + 1])[0][0, -1], x[0, t + 1]).item() for n in n_ok]
                assert min(abs(per[t] - o) for o in options) < 1e-5, t


def test_greedy_sampling_with_the_cache_equals_rereading_the_context():
    from charnn.vocab import Vocab

    vocab = Vocab([ord(c) for c in "abcdefghij\n"])
    m = small(block=8)
    text = sample_text(m, vocab, length=40, temperature=0.0, seed=1)[0]
    ids = list(vocab.encode("\n")) + list(vocab.encode(text))
    x = torch.as_tensor([ids], dtype=torch.long)
    want = reference_logits(m, x)[0].argmax(-1)  # the next id after each position, by the rule
    assert ids[1:] == want[:-1].tolist()


def test_shapes_parameters_and_checkpoint_keys_agree():
    m = small()
    shapes = expected_shapes(m.cfg)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == shapes
    assert m.num_params == sum(math.prod(s) for s in shapes.values())


def test_bad_transformer_settings_are_refused_in_one_line():
    def cfg(**kw):
        c = RunConfig()
        apply_preset(c, "gpt-cpu")
        for k, v in kw.items():
            setattr(c.model if hasattr(c.model, k) else c.train, k, v)
        return c

    with pytest.raises(CharnnError, match="--heads 3 does not divide"):
        cfg(heads=3).validate()
    with pytest.raises(CharnnError, match=r"--seq-len \(32\) must equal --block \(64\)"):
        cfg(seq_len=32).validate()
    with pytest.raises(CharnnError, match="--weight-drop: for recurrent cells only"):
        cfg(weight_drop=0.1).validate()
    with pytest.raises(CharnnError, match="--cell lstm has neither"):
        cfg(cell="lstm").validate()
    with pytest.raises(CharnnError, match="a transformer's width is --embed"):
        cfg(hidden=64).validate()
    c = RunConfig()
    c.train.windows = "random"
    with pytest.raises(CharnnError, match="--cell lstm carries its state"):
        c.validate()


def test_the_presets_are_nanogpts_recipes():
    for name, (layers, heads, width, block, dropout) in {"gpt-cpu": (4, 4, 128, 64, 0.0),
                                                         "gpt": (6, 6, 384, 256, 0.2)}.items():
        c = RunConfig()
        apply_preset(c, name)
        c.validate()
        m = c.model
        assert (m.cell, m.layers, m.heads, m.embed, m.block, m.dropout) == ("transformer", layers, heads, width,
                                                                            block, dropout)
        assert c.train.seq_len == block and c.train.lr == 1e-3 and c.train.weight_decay == 0.1
        assert c.train.windows == "random"
        assert set(PRESETS[name]) == {"model", "train"}


def transformer_config(text_file, **train):
    c = tiny_config(text_file, **train)
    c.model = ModelConfig(cell="transformer", layers=2, heads=2, embed=32, hidden=32, block=24, dropout=0.1)
    c.train.seq_len, c.train.lr, c.train.weight_decay = 24, 3e-3, 0.1
    return c


def test_a_transformer_learns_the_synthetic_corpus(text_file, tmp_path):
    res = train(transformer_config(text_file, max_steps=600, eval_every=200), tmp_path / "run", progress=False)
    assert res.best_val_loss < 0.75, res.best_val_loss  # the unigram entropy is about 2.6 nats
    loaded = ckpt.load(tmp_path / "run", "best")
    model = loaded.build_model()
    assert loaded.config.model.describe() == "transformer 2x32, 2 heads, block 24"
    text = sample_text(model, loaded.vocab, length=200, temperature=0.5, seed=3)[0]
    words = {w.strip(".") for w in text.split()[:-1]}  # the last may be cut off
    assert words <= {"one", "two", "three", "four", "five", ""}, words


@pytest.mark.parametrize("windows", ["streams", "random"])
def test_stop_and_resume_is_bit_identical_with_dropout(text_file, tmp_path, windows):
    train(transformer_config(text_file, max_steps=30, eval_every=12, windows=windows), tmp_path / "whole",
          progress=False)
    first = train(transformer_config(text_file, max_steps=30, eval_every=12, windows=windows), tmp_path / "split",
                  progress=False, on_step=lambda s: s >= 17)
    assert first.stopped_by == "interrupt" and first.steps == 17
    train(None, tmp_path / "split", resume=True, progress=False)
    a, b = ckpt.load(tmp_path / "whole").weights, ckpt.load(tmp_path / "split").weights
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert ckpt.load(tmp_path / "whole").meta["val_loss"] == ckpt.load(tmp_path / "split").meta["val_loss"]


def test_random_windows_are_a_function_of_seed_epoch_and_step_and_shard_the_batch():
    from charnn.data import RandomWindows

    data = np.arange(10_000) % 251
    a, b = RandomWindows(data, 8, 16, seed=3), RandomWindows(data, 8, 16, seed=3)
    w = a.window(5, epoch=2)
    assert w.shape == (8, 17) and torch.equal(w, b.window(5, epoch=2))
    assert torch.equal(w[:, 1:], (w[:, :-1] + 1) % 251)  # each row is one contiguous piece of the text
    assert not torch.equal(w, a.window(6, epoch=2)) and not torch.equal(w, a.window(5, epoch=3))
    assert not torch.equal(w, RandomWindows(data, 8, 16, seed=4).window(5, epoch=2))
    assert torch.equal(torch.cat([a.window(5, 0, 3, 2), a.window(5, 3, 5, 2)]), w)  # processes' shares make the batch
    starts = torch.cat([a.window(k)[:, 0] for k in range(200)])
    assert len(set(starts.tolist())) > 200  # places all over the split, not a few fixed ones


def test_the_end_of_run_report_equals_charnn_eval(text_file, tmp_path):
    res = train(transformer_config(text_file, max_steps=20, eval_every=20), tmp_path / "run", progress=False)
    loaded = ckpt.load(tmp_path / "run", "best")
    from charnn.evaluate import model_text, score_text

    t = model_text(loaded, split="val")
    assert score_text(loaded.build_model(), loaded.vocab, t.ids).loss == pytest.approx(res.best_val_loss, abs=1e-9)


@pytest.mark.slow
def test_compare_trains_recurrence_and_attention_at_the_same_budget(text_file, tmp_path):
    import json as _json

    from charnn.study.compare import parse_models
    from helpers import charnn

    with pytest.raises(CharnnError, match="give different models from lstm, gru, rnn, transformer"):
        parse_models("lstm,cnn")
    out = tmp_path / "cmp"
    r = charnn("compare", text_file, "--out", out, "--models", "lstm,transformer", "--max-steps", "20",
               "--params", "200k", "--json")
    assert r.returncode == 0, r.stderr
    res = {x["cell"]: x for x in _json.loads(r.stdout)["results"]}
    assert set(res) == {"lstm", "transformer"} and all(x["unit"] == "char" for x in res.values())
    assert all(abs(x["params"] - 200_000) / 200_000 < 0.1 for x in res.values()), res
    gpt = ckpt.load(out / res["transformer"]["run"])
    m = gpt.config.model
    # the gpt-muon preset's shape and optimiser, its width (a multiple of its heads) set by the budget
    assert (m.cell, m.layers, m.heads, m.block, m.embed) == ("transformer", 2, 6, 64, res["transformer"]["hidden"])
    assert m.embed % 6 == 0 and gpt.config.train.optimizer == "muon"
    assert gpt.meta["step"] == 20 and sum(t.numel() for t in gpt.weights.values()) == res["transformer"]["params"]
    for x in res.values():  # the table's number is charnn eval's on the same test text
        ev = _json.loads(charnn("eval", out / x["run"], "--split", "test", "--json").stdout)
        assert x["test_bpc"] == pytest.approx(ev["bpc"], rel=1e-6)
    assert res["lstm"]["test_chars"] == res["transformer"]["test_chars"]
    assert "| char | transformer 2x" in (out / "compare.md").read_text()
