"""--optimizer muon: Muon on the hidden matrices, AdamW on the rest, saved and resumed as one."""

import json

import pytest
import torch
from helpers import tiny_config
from safetensors.torch import load_file

import charnn
from charnn import checkpoint as ckpt
from charnn.config import ModelConfig, RunConfig, apply_preset
from charnn.model import build
from charnn.optim import MuonAdamW, gate_blocks, hidden_matrices
from charnn.trainer import make_optimizer, train


def _names(model, params):
    ids = {id(p) for p in params}
    return sorted(n for n, p in model.named_parameters() if id(p) in ids)


def test_muon_takes_the_hidden_matrices_and_adamw_the_tables_read_out_biases_and_norms():
    lstm = build(ModelConfig(cell="lstm", layers=2, embed=8, hidden=16, vocab_size=11, labels=3))
    matrices, rest = hidden_matrices(lstm)
    assert _names(lstm, matrices) == ["rnn.weight_hh_l0", "rnn.weight_hh_l1", "rnn.weight_ih_l0", "rnn.weight_ih_l1"]
    assert "head.weight" in _names(lstm, rest) and "embed.weight" in _names(lstm, rest)
    assert "label_embed.weight" in _names(lstm, rest)
    gpt = build(ModelConfig(cell="transformer", layers=1, heads=2, embed=8, hidden=8, block=8, vocab_size=11))
    matrices, rest = hidden_matrices(gpt)
    assert _names(gpt, matrices) == ["blocks.0.attn.proj.weight", "blocks.0.attn.qkv.weight",
                                     "blocks.0.fc.weight", "blocks.0.proj.weight"]
    assert {"embed.weight", "pos.weight", "ln_f.weight", "blocks.0.fc.bias"} <= set(_names(gpt, rest))


def test_per_gate_muon_steps_each_gates_block_as_torchs_muon_steps_a_parameter_of_its_own():
    """--muon-gates: the stacked recurrent matrices move exactly as if each gate's block were its own
    parameter under torch.optim.Muon (its momentum, orthogonalisation, shape-scaled rate and decay),
    over several steps; over the stack they move otherwise."""
    torch.manual_seed(0)
    lstm = build(ModelConfig(cell="lstm", layers=2, embed=6, hidden=8, vocab_size=7))
    matrices, rest = hidden_matrices(lstm)
    assert gate_blocks(lstm, matrices) == [4, 4, 4, 4]
    gru = build(ModelConfig(cell="gru", layers=1, embed=6, hidden=8, vocab_size=7))
    assert gate_blocks(gru, hidden_matrices(gru)[0]) == [3, 3]
    rnn = build(ModelConfig(cell="rnn", layers=1, embed=6, hidden=8, vocab_size=7))
    assert gate_blocks(rnn, hidden_matrices(rnn)[0]) == [1, 1]
    gpt = build(ModelConfig(cell="transformer", layers=1, heads=2, embed=8, hidden=8, block=8, vocab_size=11))
    assert gate_blocks(gpt, hidden_matrices(gpt)[0]) == [1, 1, 1, 1]

    opt = MuonAdamW(matrices, rest, lr=0.02, weight_decay=0.1, ns_steps=3, blocks=gate_blocks(lstm, matrices))
    alone = [torch.nn.Parameter(piece.detach().clone()) for w in matrices for piece in w.chunk(4)]
    ref = torch.optim.Muon(alone, lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw", ns_steps=3)
    whole = [torch.nn.Parameter(w.detach().clone()) for w in matrices]
    stack = torch.optim.Muon(whole, lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw", ns_steps=3)
    for _ in range(3):
        opt.zero_grad()
        x = torch.randint(0, 7, (3, 5))
        lstm.loss(x, x)[0].backward()
        grads = [w.grad.clone() for w in matrices]
        for p, g in zip(alone, (piece for gr in grads for piece in gr.chunk(4))):
            p.grad = g.clone()
        for p, g in zip(whole, grads):
            p.grad = g.clone()
        opt.step()
        ref.step()
        stack.step()
    for k, w in enumerate(matrices):
        assert torch.equal(w.detach(), torch.cat([p.detach() for p in alone[4 * k : 4 * k + 4]]))
        assert not torch.allclose(w.detach(), whole[k].detach(), atol=1e-4)
    opt.zero_grad()
    assert all(p.grad is None for p in lstm.parameters())  # the stacked matrices' own gradients too


def test_a_muon_update_is_orthogonal_where_adamw_would_keep_the_gradients_shape():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.zeros(24, 12))
    b = torch.nn.Parameter(torch.zeros(12))
    opt = MuonAdamW([w], [b], lr=0.01, weight_decay=0.0)
    # a gradient of very unequal directions: singular values from 1 to 1000
    u, _ = torch.linalg.qr(torch.randn(24, 12))
    v, _ = torch.linalg.qr(torch.randn(12, 12))
    w.grad = u @ torch.diag(torch.logspace(0, 3, 12)) @ v.T
    b.grad = torch.randn(12)
    opt.step()
    step = -w.detach() / (0.01 * 0.2 * 24 ** 0.5)  # Moonshot's scaling: 0.2 sqrt(max(A, B))
    s = torch.linalg.svdvals(step)
    assert s.min() > 0.5 and s.max() < 1.3  # every direction moves about equally (Newton-Schulz: ~0.7-1.2)
    assert torch.allclose(-b.detach(), 0.01 * torch.sign(b.grad), rtol=1e-3)  # AdamW's first step: lr * sign


def _spread_after_one_update(ns_steps: int) -> float:
    """The ratio of largest to smallest singular value of Muon's first update of a badly conditioned gradient."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.zeros(24, 12))
    opt = MuonAdamW([w], [torch.nn.Parameter(torch.zeros(1))], lr=0.01, weight_decay=0.0, ns_steps=ns_steps)
    u, _ = torch.linalg.qr(torch.randn(24, 12))
    v, _ = torch.linalg.qr(torch.randn(12, 12))
    w.grad = u @ torch.diag(torch.logspace(0, 3, 12)) @ v.T
    opt.step()
    s = torch.linalg.svdvals(w.detach())
    return float(s.max() / s.min())


def test_fewer_newton_schulz_iterations_leave_the_update_less_orthogonal_and_the_setting_reaches_torch():
    # the gradient's singular values span x1,000; after one iteration the update's span ~x280, three ~x23, five ~x2
    one, three, five = (_spread_after_one_update(n) for n in (1, 3, 5))
    assert one > 5 * three and three > 5 * five and five < 3
    model = build(ModelConfig(cell="lstm", layers=1, embed=4, hidden=8, vocab_size=7))
    opt = make_optimizer(tiny_config("unused", optimizer="muon", muon_ns_steps=3), model)
    assert [g["ns_steps"] for g in opt.parts[0].param_groups] == [3]
    cfg = RunConfig()
    apply_preset(cfg, "default")
    assert cfg.train.optimizer == "muon" and cfg.train.muon_ns_steps == 3 and cfg.train.muon_gates  # measured: docs/notes.md
    # the default preset's value is no request: switching its optimiser to AdamW is fine
    assert charnn.build_config("stdlib", optimizer="adamw").train.optimizer == "adamw"


def test_the_composite_state_round_trips_through_a_checkpoints_tensors_and_json():
    torch.manual_seed(0)
    model = build(ModelConfig(cell="lstm", layers=1, embed=4, hidden=8, vocab_size=7))
    cfg = tiny_config("unused", optimizer="muon")
    opt = make_optimizer(cfg, model)
    assert isinstance(opt, MuonAdamW)
    x = torch.randint(0, 7, (3, 5))
    for _ in range(3):
        opt.zero_grad()
        model.loss(x, x)[0].backward()
        opt.step()
    tensors, js = ckpt.optimizer_to_tensors(opt)
    assert {k.rsplit(".", 1)[-1] for k in tensors} == {"momentum_buffer", "exp_avg", "exp_avg_sq", "step"}
    again = make_optimizer(cfg, model)
    ckpt.optimizer_from_tensors(again, tensors, json.loads(json.dumps(js)))
    a, b = opt.state_dict(), again.state_dict()
    assert a["state"].keys() == b["state"].keys()
    assert all(torch.equal(a["state"][i][k], b["state"][i][k]) for i in a["state"] for k in a["state"][i]
               if torch.is_tensor(a["state"][i][k]))
    for g in opt.param_groups:  # the trainer's schedule reaches both parts
        g["lr"] = 0.5
    assert opt.parts[0].param_groups[0]["lr"] == 0.5 and opt.parts[1].param_groups[0]["lr"] == 0.5


def _muon_config(text_file, cell):
    cfg = tiny_config(text_file, max_steps=60, optimizer="muon")
    cfg.train.lr = 3e-2  # Muon's update of a 128 x 32 matrix is smaller than AdamW's: it takes a larger rate here
    if cell == "lstm-gates":
        cfg.train.muon_gates = True
    if cell == "transformer":
        cfg.model = ModelConfig(cell="transformer", layers=2, heads=2, embed=32, hidden=32, block=24, dropout=0.1)
        cfg.train.seq_len, cfg.train.lr, cfg.train.windows = 24, 1e-2, "random"
    return cfg


@pytest.mark.parametrize("cell", ["lstm", "lstm-gates", "transformer"])
def test_a_muon_run_learns_and_resumes_bit_identically(text_file, tmp_path, cell):
    whole = train(_muon_config(text_file, cell), tmp_path / "a", progress=False)
    assert whole.best_val_loss < (1.0 if cell == "transformer" else 0.5)  # LSTM: AdamW's tiny preset 0.43 at 60 steps, Muon 0.15
    a = load_file(tmp_path / "a" / "last.safetensors")
    assert any(k.endswith("momentum_buffer") for k in a) and any(k.endswith("exp_avg") for k in a)
    first = train(_muon_config(text_file, cell), tmp_path / "c", progress=False, on_step=lambda s: s >= 23)
    assert first.stopped_by == "interrupt"
    train(None, tmp_path / "c", resume=True, progress=False)
    c = load_file(tmp_path / "c" / "last.safetensors")
    assert all(torch.equal(a[k], c[k]) for k in a if k.startswith(("model.", "state.", "optim.")))


def test_the_gpt_muon_preset_gives_its_blocks_matrices_to_muon():
    cfg = RunConfig()
    apply_preset(cfg, "gpt-muon")
    cfg.validate()
    cfg.model.vocab_size = 65
    model = build(cfg.model)
    opt = make_optimizer(cfg, model)
    assert isinstance(opt, MuonAdamW) and cfg.train.ema > 0 and cfg.train.windows == "random"
    assert len(opt.parts[0].param_groups[0]["params"]) == 4 * cfg.model.layers  # qkv, attention out, MLP in and out


def test_a_torch_without_muon_is_told_in_one_line(monkeypatch):
    from charnn.errors import CharnnError

    monkeypatch.delattr(torch.optim, "Muon")
    model = build(ModelConfig(cell="lstm", layers=1, embed=4, hidden=8, vocab_size=7))
    with pytest.raises(CharnnError, match="needs torch 2.9 or later .* or pass --optimizer adamw"):
        make_optimizer(tiny_config("unused", optimizer="muon"), model)
