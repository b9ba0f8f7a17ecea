"""`--cuda-graph`: the training step's forward, backward and clipping captured once in a CUDA graph
and replayed every step.

On a GPU the default model's step is bound by the host launching kernels, not by arithmetic
(cuDNN runs the recurrence a time step at a time: about 230 kernel launches a step, profiled). Replaying a
captured graph launches them all at once; measured on an H200, the default model's step went
from 3.1 ms to 1.0 ms (bench/cuda_graph_step.py), and `charnn train --cuda-graph` ran about 2.5-3 times
the characters per second with weights bit-identical to the eager run's (scripts/gpu_check.py
--only graph). The optimiser's step stays outside the graph
(fused AdamW is one launch), so the learning-rate schedule needs no device tensors and the
optimiser state nothing special.

A graph replays fixed memory: the batch, the carried state, the loss and the gradient norm live in
buffers made once, and the gradients are the ones the capture allocated (never set to None
afterwards). Every step of a run with --cuda-graph is a replay, also the first after --resume, so
a resumed run does the same arithmetic as an uninterrupted one.

PyTorch has no CUDA graphs on other devices; the tests run the same buffers and order of work on
the CPU with `Replayed`, a stand-in that calls the step's function where a graph would replay it.
"""

from __future__ import annotations

import os

import torch

from charnn.devices import clip_gradients
from charnn.errors import CharnnError


def stand_in() -> bool:
    """Whether --cuda-graph runs on the CPU with the stand-in (a hook for the tests, which have no GPU)."""
    return os.environ.get("CHARNN_CUDA_GRAPH_STAND_IN") == "1"


def refusal(cfg, device_type: str, distributed: bool) -> str | None:
    """Why this run cannot use --cuda-graph, or None."""
    t, m = cfg.train, cfg.model
    if device_type != "cuda" and not stand_in():
        return (
            f"needs a CUDA GPU (this run is on {device_type}): drop --cuda-graph, or resume a run that used it "
            f"with --no-cuda-graph"
        )
    if distributed:
        return "runs in one process: drop it under torchrun"
    if t.compile:
        return "and --compile are two ways to the same end: choose one"
    if t.precision == "bf16":
        return "needs --precision fp32 (bf16 made charnn's LSTM no faster on a GPU)"
    if m.weight_drop:
        return "cannot capture --weight-drop (its weights are swapped in each step): drop one of them"
    if m.cell != "lstm" or m.layers != 1:
        # checked on an H200 with one-layer LSTMs; two layers with dropout between them failed
        # inside cuDNN under capture, and other shapes have not run on a GPU yet
        return (
            f"runs one-layer LSTMs only (the default, large and long presets), the models it was checked "
            f"with on a GPU; this run is a {m.layers}-layer {m.cell.upper()}: drop --cuda-graph"
        )
    return None


def check(cfg, device_type: str, distributed: bool) -> None:
    why = refusal(cfg, device_type, distributed)
    if why:
        raise CharnnError(f"--cuda-graph {why}")


class Replayed:
    """The CPU's stand-in for a CUDA graph: `capture(fn)` records fn, `replay()` calls it. A graph
    captured with the gradients unset overwrites them on each replay; the stand-in unsets them
    before each call to do the same."""

    def __init__(self, params):
        self.params, self.fn = list(params), None

    def warm_up(self, fn) -> None:
        for _ in range(2):
            fn()

    def capture(self, fn) -> None:
        self.fn = fn

    def replay(self) -> None:
        for p in self.params:
            p.grad = None
        self.fn()


class _CudaGraph(Replayed):
    def __init__(self, params):
        super().__init__(params)
        self.graph = torch.cuda.CUDAGraph()

    def warm_up(self, fn) -> None:
        # on a side stream, as PyTorch's whole-network capture does: cuDNN's plans and cuBLAS's
        # handles and workspaces are made outside the capture
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            super().warm_up(fn)
        torch.cuda.current_stream().wait_stream(side)

    def capture(self, fn) -> None:
        for p in self.params:  # the capture allocates the gradients it will overwrite on every replay
            p.grad = None
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            fn()

    def replay(self) -> None:
        self.graph.replay()


class GraphedStep:
    """The static buffers of one run's step, and its captured forward, backward and clipping.

    step(chunk, reset) copies the window in, zeroes the carried state at an epoch's start, and
    replays; then `loss`, `norm` (the gradient norm before clipping) and `state` hold this step's
    values and every parameter's .grad its clipped gradient, for the optimiser to take."""

    def __init__(self, model, streams: int, seq_len: int, carried, grad_clip: float, grad_clamp: float, stand_in: bool = False):
        device = next(model.parameters()).device
        self.model, self.clip, self.clamp = model, grad_clip, grad_clamp
        self.chunk = torch.zeros(streams, seq_len + 1, dtype=torch.long, device=device)
        self.state = (
            model.init_state(streams, device)
            if carried is None
            else (tuple(s.detach().clone() for s in carried) if isinstance(carried, tuple) else carried.detach().clone())
        )
        self.loss = torch.zeros((), device=device)
        self.norm = torch.zeros((), device=device)
        params = list(model.parameters())
        self.graph = Replayed(params) if stand_in else _CudaGraph(params)
        # The warm-up runs the step twice without the optimiser: the weights stay, and the carried
        # state and the random streams are put back (a resumed run warms up too, and must go on
        # exactly where the uninterrupted one was).
        saved = [s.clone() for s in self._states()]
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            self.graph.warm_up(self._body)
        with torch.no_grad():
            for s, v in zip(self._states(), saved):
                s.copy_(v)
        self.graph.capture(self._body)

    def _states(self) -> list:
        return list(self.state) if isinstance(self.state, tuple) else [self.state]

    def _body(self) -> None:
        x, y = self.chunk[:, :-1], self.chunk[:, 1:]
        loss, state = self.model.loss(x, y, self.state)
        loss.backward()
        norm = clip_gradients(list(self.model.parameters()), self.clip, self.clamp, self.chunk.device.type)
        with torch.no_grad():
            for s, new in zip(self._states(), list(state) if isinstance(state, tuple) else [state]):
                s.copy_(new)
            self.loss.copy_(loss)
            self.norm.copy_(norm)

    def step(self, chunk: torch.Tensor, reset: bool) -> None:
        self.chunk.copy_(chunk, non_blocking=True)
        if reset:
            for s in self._states():
                s.zero_()
        self.graph.replay()
