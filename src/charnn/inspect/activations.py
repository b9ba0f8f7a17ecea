"""Record what every cell of a CharRNN does while it reads a text, chunk by chunk.

The recurrence itself runs in the fused kernels (``torch.nn.LSTM`` & co., one layer at a time,
so every layer's hidden states come out); the gates are then recomputed for the whole chunk at
once from each step's input and previous hidden state (one matrix product per layer), and the
LSTM cell state follows from the gates by its element-wise recurrence. This is about as fast as
a forward pass, and tests check it against the step-by-step reference ``CharRNN.forward_steps``.

Memory is bounded by the chunk: a 3-layer, 512-cell LSTM holds 6 quantities x 3 x 512 floats per
character, 36 KB, so 1M characters are never held at once; consumers accumulate what they need
(correlations, saturation counts) chunk by chunk.

Ablation (``clamp``) changes the recurrence itself, so a clamped layer runs step by step.

A transformer's units are its MLP neurons (quantity "m", after the GELU; see
``ModelConfig.units`` for why those): it reads the text as evaluation does (the window sliding,
``CharTransformer._read``) with a ``Probe`` that keeps them and applies the clamps and the muted
heads, so what is recorded is what the model computes while it is scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import nn

from charnn.model import CharRNN, Model, cell_gates, cell_step, inputs, lstm_memory
from charnn.transformer import Probe

QUANTITIES = {"lstm": ("h", "c", "i", "f", "g", "o"), "gru": ("h", "r", "z", "n"), "rnn": ("h",), "transformer": ("m",)}
GATES = {"lstm": ("i", "f", "o"), "gru": ("r", "z"), "rnn": (), "transformer": ()}
# Value range of each quantity as shown (c is shown as tanh(c), the paper's convention; an MLP
# neuron's GELU output has no upper bound: the pages show values past the range at full colour).
RANGES = {
    "h": (-1.0, 1.0),
    "c": (-1.0, 1.0),
    "g": (-1.0, 1.0),
    "n": (-1.0, 1.0),
    "i": (0.0, 1.0),
    "f": (0.0, 1.0),
    "o": (0.0, 1.0),
    "r": (0.0, 1.0),
    "z": (0.0, 1.0),
    "m": (-1.0, 1.0),
}
NAMES = {
    "h": "hidden state h",
    "c": "cell state tanh(c)",
    "i": "input gate",
    "f": "forget gate",
    "g": "candidate g",
    "o": "output gate",
    "r": "reset gate",
    "z": "update gate",
    "n": "candidate n",
    "m": "MLP neuron (after GELU)",
}


def held(cell: str) -> tuple[str, ...]:
    """The quantities ablation holds: an LSTM's h and c, a GRU's or RNN's h, a transformer's MLP neurons."""
    return ("h", "c") if cell == "lstm" else QUANTITIES[cell][:1]


PARALLEL_ABOVE = 20_000  # texts longer than this are read as parallel pieces by the analyses


def streams_for(n: int, streams: int = 16) -> int:
    """How many parallel pieces the analyses read a text of n characters as: one exact pass for
    a short text, `streams` pieces (each with its warm-up, see ``record``) for a long one."""
    return streams if n > PARALLEL_ABOVE else 1


@dataclass
class Chunk:
    """Recordings for a run of characters.

    positions: (N,) index in the text of each recorded character (the state after reading it);
    acts: quantity -> (L, N, H) float32 (c already squashed by tanh);
    logp: (N, V) log-probabilities of the next character after each position.
    """

    positions: np.ndarray
    acts: dict[str, torch.Tensor]
    logp: torch.Tensor


@dataclass
class Clamp:
    """Hold some cells of one layer at fixed values at every step: indices (K,), h and c (K,).
    None leaves that part free (steering an LSTM clamps c alone; h follows it). For a transformer
    the units are MLP neurons and h holds their values (c is unused)."""

    cells: torch.Tensor
    h: torch.Tensor | None
    c: torch.Tensor | None

    @classmethod
    def from_clamped(cls, clamped: dict, cell: str) -> dict[int, "Clamp"]:
        """``sample.parse_clamp``'s cells as clamps: what `charnn sample --clamp` holds."""
        return {k: cls(idx, None, val) if cell == "lstm" else cls(idx, val, None) for k, (idx, val) in clamped.items()}


def _layer(model: CharRNN, layer: int) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """A one-layer fused module sharing layer `layer`'s weights, and those weights."""
    rnn = model.rnn
    w = tuple(getattr(rnn, f"{n}_l{layer}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    single = type(rnn)(
        input_size=w[0].shape[1],
        hidden_size=model.cfg.hidden,
        num_layers=1,
        batch_first=True,
        **({"nonlinearity": "tanh"} if model.cfg.cell == "rnn" else {}),
    )
    single.weight_ih_l0, single.weight_hh_l0, single.bias_ih_l0, single.bias_hh_l0 = (nn.Parameter(t) for t in w)
    return single.to(w[0].device).eval(), w


def _gates(cell: str, inp, h_prev, w) -> dict[str, torch.Tensor]:
    """Gate values for a whole chunk: inp (B, T, E), h_prev (B, T, H) -> each (B, T, H)."""
    w_ih, w_hh, b_ih, b_hh = w
    return cell_gates(cell, inp @ w_ih.T + b_ih, h_prev @ w_hh.T + b_hh)


def _clamped_steps(cell: str, inp, h, c, w, clamp: Clamp):
    """One layer step by step with `clamp` holding its cells at every step: -> hs (B, T, H), h, c."""
    w_ih, w_hh, b_ih, b_hh = w
    xw = inp @ w_ih.T + b_ih  # (B, T, G*H)

    def held(name, v):
        value = clamp.c if name == "c" else clamp.h
        if value is None:
            return v
        v = v.clone()
        v[:, clamp.cells] = value
        return v

    out = []
    for t in range(inp.shape[1]):
        h, c, _ = cell_step(cell, xw[:, t], h, c, w_hh, b_hh, held)
        out.append(h)
    return torch.stack(out, dim=1), h, c


def _lstm_cells(c0, gates: dict[str, torch.Tensor]):
    """The LSTM cell state over a chunk from its gates: c0 (B, H), gates each (B, T, H) -> (B, T, H).

    Step by step (nn.LSTM returns only the last cell state, and the closed form of this linear
    recurrence, products of forget gates, under- or overflows on long chunks).
    """
    out = torch.empty_like(gates["i"])
    c = c0
    for t in range(out.shape[1]):
        c = lstm_memory({k: gates[k][:, t] for k in ("i", "f", "g")}, c)
        out[:, t] = c
    return out


@dataclass
class _Layout:
    """How a text of n characters is read as parallel pieces: piece s records positions
    first[s]..end[s]-1 after a warm-up from begin[s]; column col of a chunk reads begin + col."""

    first: np.ndarray
    begin: np.ndarray
    end: np.ndarray
    n: int

    @classmethod
    def of(cls, n: int, streams: int, warmup: int, align: int = 1) -> "_Layout":
        """align: each piece starts at a multiple of it (a transformer's slide period: then its
        window moves at the same places as in one pass, and a warm-up of a block makes the
        pieces' recordings exactly those of one pass)."""
        streams = max(1, min(streams, n // max(warmup, 1) or 1)) if streams > 1 else 1
        warm = warmup if streams > 1 else 0
        piece = -(-n // streams)
        first = np.arange(streams, dtype=np.int64) * piece
        begin = np.maximum((first - warm) // align * align, 0)  # stream 0 needs no warm-up: it starts at the start
        return cls(first, begin, np.minimum(first + piece, n), n)

    @property
    def streams(self) -> int:
        return len(self.first)

    def columns(self, ids: np.ndarray, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray, torch.Tensor]]:
        """-> per chunk: positions (S, T), which of them are recorded (S, T), and the ids read (S, T)."""
        total = int((self.end - self.begin).max())
        for col in range(0, total, chunk):
            pos = self.begin[:, None] + col + np.arange(min(chunk, total - col))[None, :]  # (S, T)
            valid = (pos >= self.first[:, None]) & (pos < self.end[:, None])
            x = torch.from_numpy(np.asarray(ids[np.minimum(pos, self.n - 1)], dtype=np.int64))  # past the end: ignored
            yield pos, valid, x


@torch.no_grad()
def record(
    model: Model,
    ids: np.ndarray,
    quantities=None,
    streams: int = 1,
    warmup: int = 200,
    chunk: int = 512,
    clamps: dict[int, Clamp] | None = None,
    mute: dict | None = None,
) -> Iterator[Chunk]:
    """Read ids (N,) and yield the recordings, chunk by chunk.

    quantities: which of QUANTITIES[cell] to keep (default all; "h" is always computed).
    streams > 1 reads the text as that many pieces in parallel, each starting `warmup` characters
    early (those are not recorded), which is much faster on long texts; streams=1 is one exact
    pass from the zero state. Chunks then come in stream order, not text order.
    clamps: layer -> Clamp, cells held fixed while reading (ablation).
    mute: layer -> heads (K,) whose output is zeroed (a transformer's head ablation).
    """
    cfg = model.cfg
    if model.training:
        raise ValueError(
            "recording needs the model in eval mode (dropout off): call model.eval() first, "
            "or load it with Checkpoint.build_model()"
        )
    keep = tuple(quantities or QUANTITIES[cfg.cell])
    # Bound the memory of one chunk (~256 MB of recordings and their intermediates), so that a
    # 3 x 512 LSTM over 64 streams stays within a few GB whatever `chunk` was asked for.
    per_step = max(1, streams) * cfg.layers * cfg.units * (len(keep) + 6) * 4
    chunk = max(16, min(chunk, (256 << 20) // per_step))
    if not isinstance(model, CharRNN):
        warmup = max(warmup, cfg.block)  # a transformer's context is a block at most: that much warms it
        lay = _Layout.of(len(ids), streams, warmup, align=cfg.block - model.keep)
        yield from _record_transformer(model, ids, lay, chunk, clamps or {}, mute)
        return
    if mute:
        raise ValueError("only a transformer has heads to mute")
    yield from _record_recurrent(model, ids, keep, _Layout.of(len(ids), streams, warmup), chunk, clamps or {})


def _record_transformer(model, ids, lay: _Layout, chunk: int, clamps: dict[int, Clamp], mute) -> Iterator[Chunk]:
    """``record`` for a CharTransformer: its MLP neurons, read as evaluation reads."""
    probe = Probe(mlp=True, clamped={k: (c.cells, c.h) for k, c in clamps.items()}, mute=mute or {})
    device = model.head.weight.device
    state = None
    for pos, valid, x in lay.columns(ids, chunk):
        kept: list[torch.Tensor] = []
        logits, state = model._read(x.to(device), state, probe, lambda t0, past, inside, kept=kept: kept.append(inside["mlp"]))
        m = torch.from_numpy(valid).to(device)
        mlp = torch.cat(kept, 2)  # (L, S, T, 4E)
        yield Chunk(positions=pos[valid], acts={"m": mlp[:, m].float()}, logp=torch.log_softmax(logits.float(), -1)[m])


def _record_recurrent(model: CharRNN, ids, keep, lay: _Layout, chunk: int, clamps: dict[int, Clamp]) -> Iterator[Chunk]:
    cfg, device, streams = model.cfg, model.head.weight.device, lay.streams
    layers = [_layer(model, k) for k in range(cfg.layers)]
    state_h = [torch.zeros(streams, cfg.hidden, device=device) for _ in range(cfg.layers)]
    state_c = [torch.zeros(streams, cfg.hidden, device=device) for _ in range(cfg.layers)]
    for pos, valid, x in lay.columns(ids, chunk):
        inp = inputs(model, x.to(device))  # (S, T, E)
        acts: dict[str, list[torch.Tensor]] = {q: [] for q in keep}
        for k, (single, w) in enumerate(layers):
            h0, c0 = state_h[k], state_c[k]
            if k in clamps:
                hs, hT, cT = _clamped_steps(cfg.cell, inp, h0, c0, w, clamps[k])
            elif cfg.cell == "lstm":
                hs, (hT, cT) = single(inp, (h0[None], c0[None]))
                hT, cT = hT[0], cT[0]
            else:
                hs, hT = single(inp, h0[None])
                hT, cT = hT[0], c0
            want_gates = [q for q in keep if q != "h"]
            if want_gates:
                h_prev = torch.cat([h0[:, None], hs[:, :-1]], dim=1)
                gates = _gates(cfg.cell, inp, h_prev, w)
                if "c" in keep:
                    cs = _lstm_cells(c0, gates)
                    if k in clamps and clamps[k].c is not None:
                        cs[..., clamps[k].cells] = clamps[k].c
                    gates["c"] = torch.tanh(cs)
                for q in want_gates:
                    acts[q].append(gates[q])
            if "h" in keep:
                acts["h"].append(hs)
            state_h[k], state_c[k] = hT, cT
            inp = hs  # dropout between layers is off in eval mode
        logp = torch.log_softmax(model.head(inp).float(), dim=-1)  # (S, T, V)
        m = torch.from_numpy(valid).to(device)
        yield Chunk(
            positions=pos[valid],
            acts={q: torch.stack(v)[:, m] for q, v in acts.items()},  # (L, N, H)
            logp=logp[m],
        )


def record_all(model: Model, ids: np.ndarray, quantities=None, **kw) -> Chunk:
    """Everything for a short text in one Chunk, in text order (one exact pass by default)."""
    parts = list(record(model, ids, quantities, **kw))
    pos = np.concatenate([p.positions for p in parts])
    order = torch.from_numpy(np.argsort(pos, kind="stable"))
    return Chunk(
        positions=pos[order.numpy()],
        acts={q: torch.cat([p.acts[q] for p in parts], dim=1)[:, order] for q in parts[0].acts},
        logp=torch.cat([p.logp for p in parts])[order],
    )
