"""`--cuda-graph`: the step's forward, backward and clipping replayed from fixed buffers.

This machine has no GPU, so the run's buffers, their order of work, the warm-up and resume are
tested with charnn's CPU stand-in for a graph (CHARNN_CUDA_GRAPH_STAND_IN=1), which calls the
captured function where CUDA would replay it: a run with it must be the run without it, bit for
bit. What only CUDA can show (capture itself, its kernels, its random streams) is checked by
`scripts/gpu_check.py --only graph` on a GPU, and by the last test here where CUDA exists."""

import json
import subprocess
import sys

import pytest
import torch

from charnn import checkpoint as ckpt
from charnn import cudagraph
from charnn.errors import CharnnError
from charnn.trainer import train
from helpers import tiny_config


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setenv("CHARNN_CUDA_GRAPH_STAND_IN", "1")


def regularised(text_file, graph: bool, **train_args):
    cfg = tiny_config(text_file, **train_args)
    # dropout on the output, dropped symbols, locked dropout: every random draw a model that
    # --cuda-graph takes makes, so that a warm-up that moved a random stream would show
    cfg.model.dropout, cfg.model.embed_drop, cfg.model.variational = 0.2, 0.1, 0.1
    cfg.train.cuda_graph, cfg.train.device = graph, "cpu"  # the stand-in; on a GPU machine too
    return cfg


def same_weights(a, b) -> bool:
    wa, wb = ckpt.load(a, "last").weights, ckpt.load(b, "last").weights
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_graphed_run_is_the_same_run_across_epochs_with_every_random_draw(text_file, tmp_path, stand_in):
    args = dict(max_steps=0, max_epochs=2.5, batch_size=16, seq_len=40, eval_every=20)
    eager = train(regularised(text_file, False, **args), tmp_path / "eager", progress=False)
    graphed = train(regularised(text_file, True, **args), tmp_path / "graph", progress=False)
    assert eager.stopped_by == graphed.stopped_by == "max-epochs" and eager.steps == graphed.steps
    assert same_weights(tmp_path / "eager", tmp_path / "graph")
    assert eager.best_val_loss == graphed.best_val_loss
    logged = [[(x["step"], x["train_loss"]) for x in map(json.loads, (tmp_path / r / "metrics.jsonl").read_text().splitlines())
               if "train_loss" in x] for r in ("eager", "graph")]
    assert len(logged[0]) >= 2 and logged[0] == logged[1]  # the loss the divergence watch reads back, step by step


def test_a_graphed_run_stopped_and_resumed_is_bit_identical(text_file, tmp_path, stand_in):
    train(regularised(text_file, True, max_steps=40, eval_every=15), tmp_path / "whole", progress=False)
    first = train(regularised(text_file, True, max_steps=40, eval_every=15), tmp_path / "split", progress=False,
                  on_step=lambda s: s >= 17)
    assert first.steps == 17
    second = train(None, tmp_path / "split", resume=True, progress=False)
    assert second.steps == 40
    assert same_weights(tmp_path / "whole", tmp_path / "split")


def test_the_warm_up_leaves_weights_state_and_random_streams_as_they_were(text_file, tmp_path, stand_in):
    from charnn.model import CharRNN

    cfg = regularised(text_file, True)
    cfg.model.vocab_size = 14
    model = CharRNN(cfg.model).train()
    weights = [p.detach().clone() for p in model.parameters()]
    carried = tuple(torch.randn(1, 4, cfg.model.hidden) for _ in range(2))
    rng = torch.get_rng_state()
    step = cudagraph.GraphedStep(model, 4, 8, carried, 1.0, 0.0, stand_in=True)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights))
    assert all(torch.equal(s, c) for s, c in zip(step.state, carried))
    assert step.state[0] is not carried[0]  # its own buffers: the caller's tensors are never written
    # a step: the window goes in, the state moves on in place, the loss and the clipped gradients come out
    buffers = [s.data_ptr() for s in step.state]
    step.step(torch.randint(0, 14, (4, 9)), reset=False)
    assert [s.data_ptr() for s in step.state] == buffers
    assert not torch.equal(step.state[0], carried[0])
    assert 1.5 < float(step.loss) < 4.5 and float(step.norm) > 0
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in model.parameters()]))
    assert float(total) <= 1.0 + 1e-5  # clipped to --grad-clip


def test_reset_starts_the_streams_from_zero(stand_in):
    from charnn.config import ModelConfig
    from charnn.model import CharRNN

    model = CharRNN(ModelConfig(cell="gru", layers=1, hidden=8, embed=4, dropout=0.0, vocab_size=5)).train()
    step = cudagraph.GraphedStep(model, 3, 6, torch.ones(1, 3, 8), 0.0, 0.0, stand_in=True)
    window = torch.randint(0, 5, (3, 7))
    step.step(window, reset=True)
    with torch.no_grad():
        expect_loss, expect_state = model.loss(window[:, :-1], window[:, 1:], None)
    assert torch.allclose(step.state, expect_state) and torch.allclose(step.loss, expect_loss)


@pytest.mark.parametrize("change,words", [
    (lambda c: None, "needs a CUDA GPU"),
    (lambda c: setattr(c.train, "compile", True), "--compile"),
    (lambda c: setattr(c.train, "precision", "bf16"), "--precision fp32"),
    (lambda c: setattr(c.model, "weight_drop", 0.2), "--weight-drop"),
    (lambda c: setattr(c.model, "layers", 2), "one-layer LSTMs only .* 2-layer LSTM"),
    (lambda c: setattr(c.model, "cell", "gru"), "one-layer LSTMs only .* 1-layer GRU"),
])
def test_what_cannot_be_graphed_is_refused_in_one_line(text_file, tmp_path, change, words, monkeypatch):
    cfg = tiny_config(text_file, max_steps=5)
    cfg.train.cuda_graph, cfg.train.device = True, "cpu"
    change(cfg)
    if words != "needs a CUDA GPU":
        monkeypatch.setenv("CHARNN_CUDA_GRAPH_STAND_IN", "1")
    with pytest.raises(CharnnError, match=f"--cuda-graph .*{words}"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last.safetensors").exists()
    assert "torchrun" in cudagraph.refusal(tiny_config(text_file), "cuda", distributed=True)
    assert cudagraph.refusal(tiny_config(text_file), "cuda", distributed=False) is None


@pytest.mark.slow
def test_the_command_line_refuses_cuda_graph_on_the_cpu_without_a_traceback(text_file, tmp_path):
    r = subprocess.run([sys.executable, "-m", "charnn", "train", str(text_file), "--out", str(tmp_path / "r"),
                        "--cuda-graph", "--device", "cpu", "--max-steps", "3", "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("charnn train: error: --cuda-graph needs a CUDA GPU")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_a_graphed_run_matches_and_resumes_exactly(text_file, tmp_path):
    def cfg(graph):
        c = tiny_config(text_file, max_steps=40, eval_every=15)
        c.train.device, c.train.cuda_graph, c.model.dropout = "cuda", graph, 0.1
        return c

    eager = train(cfg(False), tmp_path / "eager", progress=False)
    whole = train(cfg(True), tmp_path / "whole", progress=False)
    assert whole.best_val_loss == pytest.approx(eager.best_val_loss, abs=0.02)
    train(cfg(True), tmp_path / "split", progress=False, on_step=lambda s: s >= 17)
    train(None, tmp_path / "split", resume=True, progress=False)
    assert same_weights(tmp_path / "whole", tmp_path / "split")


@pytest.mark.slow
def test_a_graphed_run_resumes_on_a_machine_without_cuda_with_no_cuda_graph(text_file, tmp_path, monkeypatch):
    """A run trained with --cuda-graph, carried to a laptop: its saved setting is refused there in
    one line that names the way out, and --no-cuda-graph continues it (exactly, on the CPU)."""
    monkeypatch.setenv("CHARNN_CUDA_GRAPH_STAND_IN", "1")
    train(regularised(text_file, True, max_steps=30, eval_every=10), tmp_path / "whole", progress=False)
    train(regularised(text_file, True, max_steps=30, eval_every=10), tmp_path / "split", progress=False,
          on_step=lambda s: s >= 12)
    monkeypatch.delenv("CHARNN_CUDA_GRAPH_STAND_IN")
    cmd = [sys.executable, "-m", "charnn", "train", "--out", str(tmp_path / "split"), "--resume", "--quiet",
           "--samples", "0"]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "--cuda-graph needs a CUDA GPU" in refused.stderr and "--no-cuda-graph" in refused.stderr
    assert ckpt.load(tmp_path / "split", "last").meta["step"] == 12  # the refusal touched nothing
    done = subprocess.run(cmd + ["--no-cuda-graph"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert same_weights(tmp_path / "whole", tmp_path / "split")
    assert json.loads((tmp_path / "split" / "config.json").read_text())["train"]["cuda_graph"] is False
