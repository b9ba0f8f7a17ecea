"""The models: CharRNN (a learned embedding, a multi-layer RNN / LSTM / GRU, and a linear read-out)
and, from charnn.transformer, CharTransformer. ``build`` and ``expected_shapes`` pick the family
from the configuration; this module is the one place that asks which family a model is.

Both share one interface: ``init_state(batch)``, ``forward(x, state) -> (logits, state)``,
``loss(x, y, state)``, ``num_params``, ``head`` (the read-out, whose weight says the device).
A recurrent model's state is its hidden state, a transformer's its key/value cache.

Two paths compute the same function:
- ``forward`` runs the fused multi-layer kernels (``torch.nn.LSTM`` and friends: oneDNN on the
  CPU, cuDNN on the GPU). Training and sampling use it.
- ``forward_steps`` runs the same weights one time step and one layer at a time in plain tensor
  code and returns every layer's hidden state, LSTM cell state and gate values, which the
  visualisation work reads. Tests check that both agree.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from charnn import transformer
from charnn.config import ModelConfig
from charnn.transformer import CharTransformer

_RNN_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}  # gate blocks stacked in each weight matrix

# State: a tensor (L, B, H) for rnn/gru, a pair (h, c) of those for lstm.
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class CharRNN(nn.Module):
    def __init__(self, cfg: ModelConfig, embed_std: float = 1.0):
        """embed_std: the embedding's initial standard deviation (see ModelConfig.fit_vocab)."""
        super().__init__()
        self.cfg = cfg.buildable()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed)
        if cfg.labels:
            self.label_embed = nn.Embedding(cfg.labels, cfg.embed)
        kwargs: dict[str, int | float | bool | str] = dict(
            input_size=cfg.embed,
            hidden_size=cfg.hidden,
            num_layers=cfg.layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
        )
        if cfg.cell == "rnn":
            kwargs["nonlinearity"] = "tanh"
        self.rnn = _RNN_CLASSES[cfg.cell](**kwargs)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden, cfg.vocab_size)
        self._init_weights(embed_std)

    def _init_weights(self, embed_std: float) -> None:
        with torch.no_grad():
            self.embed.weight.mul_(embed_std)  # nn.Embedding draws N(0, 1)
            if self.cfg.labels:
                self.label_embed.weight.mul_(embed_std)
        if self.cfg.cell == "lstm":
            # Forget-gate bias 1 (Jozefowicz et al. 2015): remember by default early in training.
            # PyTorch orders LSTM gates i, f, g, o and adds two bias vectors; put the 1 in one.
            h = self.cfg.hidden
            with torch.no_grad():
                for layer in range(self.cfg.layers):
                    getattr(self.rnn, f"bias_ih_l{layer}")[h : 2 * h].fill_(1.0)
                    getattr(self.rnn, f"bias_hh_l{layer}")[h : 2 * h].fill_(0.0)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def init_state(self, batch: int, device=None) -> State:
        """The zero state for `batch` streams, hiding that an LSTM has two state tensors."""
        w = self.head.weight
        z = torch.zeros(self.cfg.layers, batch, self.cfg.hidden, device=device or w.device, dtype=w.dtype)
        return (z, z.clone()) if self.cfg.cell == "lstm" else z

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """x: (B, T) int64 ids -> logits (B, T, V) and the state after the last step."""
        if state is None:
            state = self.init_state(x.shape[0], x.device)
        cfg, train = self.cfg, self.training
        if train and cfg.embed_drop:  # a dropped symbol has no embedding anywhere in this batch
            keep = torch.bernoulli(torch.full((cfg.vocab_size, 1), 1 - cfg.embed_drop, device=x.device))
            emb = F.embedding(x % cfg.vocab_size, self.embed.weight * keep / (1 - cfg.embed_drop))
            emb = emb + self.label_embed(x // cfg.vocab_size) if cfg.labels else emb
        else:
            emb = inputs(self, x)  # (B, T, E)
        if train and cfg.variational:
            emb = _locked_dropout(emb, cfg.variational)
        if torch.is_autocast_enabled(x.device.type) and fp32_recurrence(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                out, state = self._recur(emb.float(), _float_state(state))
        else:  # on a CPU under bf16 autocast: oneDNN's bf16 RNN (weights and optimiser stay fp32)
            out, state = self._recur(emb, state)  # (B, T, H)
        if train and cfg.variational:
            out = _locked_dropout(out, cfg.variational)
        return self.head(self.drop(out)), state

    def _recur(self, emb: torch.Tensor, state: State):
        """The recurrent layers; in training with weight_drop, on hidden-to-hidden matrices with
        a fresh DropConnect mask (the weights are swapped in for this call only, so nn.LSTM still
        runs its fused kernel: dropping inside the recurrence would need a step-by-step loop)."""
        if not (self.training and self.cfg.weight_drop):
            return self.rnn(emb, state)
        dropped = {
            f"weight_hh_l{k}": F.dropout(getattr(self.rnn, f"weight_hh_l{k}"), self.cfg.weight_drop)
            for k in range(self.cfg.layers)
        }
        return torch.func.functional_call(self.rnn, dropped, (emb, state))

    def loss(self, x: torch.Tensor, y: torch.Tensor, state: State | None = None):
        """Mean cross-entropy in nats over targets y >= 0, and the final state."""
        logits, state = self(x, state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets(self.cfg, y).reshape(-1), ignore_index=-1)
        return loss, state

    # ---- the step-by-step path -------------------------------------------------------------

    def forward_steps(self, x: torch.Tensor, state: State | None = None):
        """The same function as ``forward`` (in eval mode), one step and one layer at a time.

        x: (B, T) ids. Returns logits (B, T, V), the final state, and a dict of recordings, each
        (L, B, T, H): "h" for every cell; "c" and gates "i", "f", "g", "o" for lstm;
        "r", "z", "n" (reset, update, candidate) for gru.
        """
        cfg = self.cfg
        B, T = x.shape
        if state is None:
            state = self.init_state(B, x.device)
        h0, c0 = state if cfg.cell == "lstm" else (state, None)
        names = {"lstm": ("h", "c", "i", "f", "g", "o"), "gru": ("h", "r", "z", "n"), "rnn": ("h",)}[cfg.cell]
        rec: dict[str, list[torch.Tensor]] = {k: [] for k in names}  # each: one (B, T, H) per layer
        h_last: list[torch.Tensor] = []
        c_last: list[torch.Tensor] = []
        inp = inputs(self, x)  # (B, T, E)
        for layer in range(cfg.layers):
            w_ih = getattr(self.rnn, f"weight_ih_l{layer}")
            w_hh = getattr(self.rnn, f"weight_hh_l{layer}")
            b_ih = getattr(self.rnn, f"bias_ih_l{layer}")
            b_hh = getattr(self.rnn, f"bias_hh_l{layer}")
            xw = inp @ w_ih.T + b_ih  # (B, T, G*H): the input part of every step at once
            h = h0[layer]  # (B, H)
            c = c0[layer] if c0 is not None else None
            steps: dict[str, list[torch.Tensor]] = {k: [] for k in names}
            for t in range(T):
                h, c, gates = cell_step(cfg.cell, xw[:, t], h, c, w_hh, b_hh)
                if c is not None:
                    steps["c"].append(c)
                for k, v in gates.items():
                    steps[k].append(v)
                steps["h"].append(h)
            for k in names:
                rec[k].append(torch.stack(steps[k], dim=1))  # (B, T, H)
            h_last.append(h)
            if c is not None:
                c_last.append(c)
            inp = rec["h"][-1]  # dropout between layers is off in eval mode
        logits = self.head(inp)
        final = (torch.stack(h_last), torch.stack(c_last)) if cfg.cell == "lstm" else torch.stack(h_last)
        return logits, final, {k: torch.stack(v) for k, v in rec.items()}  # each (L, B, T, H)


# ---- the cell equations, written once ----------------------------------------------------------
# nn.LSTM / GRU / RNN compute these inside their fused kernels; the step-by-step path, the
# activation recorder and ablation all call the functions below, and tests check them against
# the fused kernels and torch's LSTMCell / GRUCell / RNNCell.


def cell_gates(cell: str, xw: torch.Tensor, hw: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gates of an LSTM (i, f, g, o) or GRU (r, z, n) from the input part xw = x W_ih^T + b_ih
    and the recurrent part hw = h W_hh^T + b_hh, each (..., G*H): one step or a whole chunk at once.
    A plain RNN has no gates ({})."""
    if cell == "lstm":
        i, f, g, o = (xw + hw).chunk(4, dim=-1)
        return {"i": torch.sigmoid(i), "f": torch.sigmoid(f), "g": torch.tanh(g), "o": torch.sigmoid(o)}
    if cell == "gru":
        xr, xz, xn = xw.chunk(3, dim=-1)
        hr, hz, hn = hw.chunk(3, dim=-1)
        r = torch.sigmoid(xr + hr)
        return {"r": r, "z": torch.sigmoid(xz + hz), "n": torch.tanh(xn + r * hn)}
    return {}


def lstm_memory(gates: dict[str, torch.Tensor], c: torch.Tensor) -> torch.Tensor:
    """The LSTM cell state after a step: c' = f * c + i * g."""
    return gates["f"] * c + gates["i"] * gates["g"]


def cell_step(
    cell: str, xw_t: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None, w_hh: torch.Tensor, b_hh: torch.Tensor, clamp=None
):
    """One time step of one layer. xw_t (B, G*H) is the step's input part; h, c (B, H) the state
    (c is None except for an LSTM). clamp(name, tensor) -> tensor, if given, holds cells at values (ablation, --clamp):
    it sees the LSTM's c as soon as it is computed (so h follows the clamped c) and then h.
    Returns h, c and the step's gates."""
    hw = h @ w_hh.T + b_hh  # (B, G*H)
    gates = cell_gates(cell, xw_t, hw)
    if cell == "lstm":
        assert c is not None, "an LSTM step needs its cell state"
        c = lstm_memory(gates, c)
        if clamp is not None:
            c = clamp("c", c)
        h = gates["o"] * torch.tanh(c)
    elif cell == "gru":
        h = (1 - gates["z"]) * gates["n"] + gates["z"] * h
    else:
        h = torch.tanh(xw_t + hw)
    if clamp is not None:
        h = clamp("h", h)
    return h, c, gates


Model = CharRNN | CharTransformer


def inputs(model, x: torch.Tensor) -> torch.Tensor:
    """The input vectors of ids x (any shape): the character's embedding, plus, for a model
    conditioned on labels, its label's (x = char + vocab_size * label). So the label enters a
    recurrence through every step's input, and a transformer beside every position's embedding."""
    cfg = model.cfg
    if not cfg.labels:
        return model.embed(x)
    return model.embed(x % cfg.vocab_size) + model.label_embed(x // cfg.vocab_size)


VOCAB_ROWS = ("embed.weight", "head.weight", "head.bias")  # the weights with a row per symbol


def grow_rows(old: dict, fresh: dict, old_vocab, new_vocab) -> dict:
    """A model's weights for a larger vocabulary: `fresh` (a new model's, for new_vocab) with
    every weight of `old` (for old_vocab) put back; the per-symbol ones row by row at each old
    symbol's new id, so a new symbol's row is the fresh one and an old symbol's is untouched."""
    where = torch.as_tensor(np.searchsorted(new_vocab.codes, old_vocab.codes))  # old id -> new id
    out = {}
    for name, t in fresh.items():
        if name in VOCAB_ROWS:
            t = t.clone()
            t[where] = old[name].to(t.dtype)
            out[name] = t
        else:
            out[name] = old[name]
    return out


def select_state(model, state, idx: torch.Tensor):
    """The state of the streams `idx` (B',), in that order (beam search reorders its beams): an
    RNN's (L, B, H) [and an LSTM's c], or a transformer's cache (ids (B, P), kv (L, 2, B, ...))."""
    if not model.cfg.recurrent:
        ids, kv = state
        return ids[idx], kv[:, :, idx]
    if isinstance(state, tuple):
        return tuple(s[:, idx] for s in state)
    return state[:, idx]


def targets(cfg: ModelConfig, y: torch.Tensor) -> torch.Tensor:
    """The characters to predict from ids y (-1, not scored, stays -1): a labelled model's ids
    carry the label, and only the character is predicted."""
    if not cfg.labels:
        return y
    return torch.where(y >= 0, y % cfg.vocab_size, y)


def build(cfg: ModelConfig, embed_std: float = 1.0) -> Model:
    """The model this configuration describes, with freshly drawn weights."""
    return CharRNN(cfg, embed_std) if cfg.recurrent else CharTransformer(cfg)


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every weight build(cfg) holds, computed without allocating anything.

    Loading checks a checkpoint's tensors against these before building the model, so a file
    whose configuration claims a huge model is refused instead of allocating it.
    """
    shapes = transformer.expected_shapes(cfg) if not cfg.recurrent else _rnn_shapes(cfg)
    if cfg.labels:
        shapes["label_embed.weight"] = (cfg.labels, cfg.embed)
    return shapes


def _rnn_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    g = GATES[cfg.cell] * cfg.hidden
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (cfg.vocab_size, cfg.embed)}
    for k in range(cfg.layers):
        shapes[f"rnn.weight_ih_l{k}"] = (g, cfg.embed if k == 0 else cfg.hidden)
        shapes[f"rnn.weight_hh_l{k}"] = (g, cfg.hidden)
        shapes[f"rnn.bias_ih_l{k}"] = (g,)
        shapes[f"rnn.bias_hh_l{k}"] = (g,)
    shapes["head.weight"] = (cfg.vocab_size, cfg.hidden)
    shapes["head.bias"] = (cfg.vocab_size,)
    return shapes


# The transformer shape that parameter matching (charnn grid, charnn compare) builds: the
# gpt-cpu preset's heads and block, its width set by the budget.
STUDY_HEADS, STUDY_BLOCK = 4, 64


def count_params(cell: str, layers: int, hidden: int, vocab: int, embed: int) -> int:
    """Parameters of the model that training builds for this shape: a CharRNN (the embedding
    capped at the vocabulary, as ModelConfig.fit_vocab does), or a transformer `hidden` wide
    with STUDY_HEADS heads and a block of STUDY_BLOCK (`embed` does not apply: its width is both)."""
    if cell == "transformer":
        cfg = ModelConfig(
            cell=cell, layers=layers, hidden=hidden, embed=hidden, heads=STUDY_HEADS, block=STUDY_BLOCK, vocab_size=vocab
        )
    else:
        cfg = ModelConfig(cell=cell, layers=layers, hidden=hidden, embed=min(embed, vocab), vocab_size=vocab)
    return sum(math.prod(s) for s in expected_shapes(cfg).values())


def match_hidden(cell: str, layers: int, budget: int, vocab: int, embed: int, heads: int = STUDY_HEADS) -> int:
    """The hidden size (a transformer's width, a multiple of its `heads`) whose parameter count is
    closest to `budget` (the count grows with it; the number of heads does not change it)."""
    step = heads if cell == "transformer" else 1
    best, best_err = step, math.inf
    for h in range(step, 4097, step):
        n = count_params(cell, layers, h, vocab, embed)
        if abs(n - budget) < best_err:
            best, best_err = h, abs(n - budget)
        elif n > budget:
            break
    return best


def _locked_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout with one mask per sequence, the same at every step: x (B, T, D)."""
    mask = torch.bernoulli(torch.full((x.shape[0], 1, x.shape[2]), 1 - p, device=x.device, dtype=x.dtype))
    return x * mask / (1 - p)


def fp32_recurrence(device_type: str) -> bool:
    """Whether the recurrence stays fp32 under --precision bf16. On CUDA it does: cuDNN's autocast
    wrapper for RNNs has cast them to fp16 whatever dtype was asked for, and fp16 without a
    gradient scaler underflows (MPS follows CUDA's rule, unmeasured). On a CPU the recurrence runs
    in bf16 through oneDNN's RNN kernel, 1.3-1.45x the characters per second of fp32 measured on
    this project's AVX-512-bf16 CPU (docs/notes.md); the read-out runs in the autocast dtype
    everywhere."""
    return device_type != "cpu"


def _float_state(state: State) -> State:
    return (state[0].float(), state[1].float()) if isinstance(state, tuple) else state.float()


def detach_state(state):
    """The state cut from the graph that made it (None, a transformer's state in training, stays None)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()
