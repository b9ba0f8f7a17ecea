"""CharTransformer: a decoder-only transformer with the same interface as CharRNN.

Pre-norm blocks (LayerNorm -> causal self-attention -> residual, LayerNorm -> MLP -> residual),
learned positions, attention through ``F.scaled_dot_product_attention``: the GPT-2 shape that
nanoGPT's ``shakespeare_char`` recipe trains.

Its state is its key/value cache, the way an LSTM's is (h, c): ``forward(x, state)`` returns the
logits and the cache after x, and a later call goes on from it. In training each window is its
own context (nanoGPT's way: the windows are the block long, and a cache carried across them
would need positions past the block); training returns no state.

The window slides like this: the cache holds at most ``block`` positions. When the next
character would not fit, the cache is rebuilt from the last ``block // 2`` characters (their
positions renumbered from 0, one forward of block/2 characters), and reading goes on. So every
character is read with between block/2 and block - 1 characters before it (all there are, near
the start), and the cost per character stays flat however long the text: one rebuild every
block/2 characters, which doubles the arithmetic of one plain pass. Learned absolute positions
are why a cached key cannot simply be kept when the window moves: its position is part of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from charnn.config import ModelConfig

# State: (ids (B, P) int64, kv (L, 2, B, heads, P, head_dim)): the characters the cache holds
# and their keys and values, layer by layer.
Cache = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Probe:
    """What a read keeps from inside the model and what it holds fixed there (looking inside).

    att, mlp, resid: keep each layer's attention rows, MLP neurons (after the GELU: the units
    ``ModelConfig.units`` counts) and residual stream after the block.
    clamped: layer -> (neurons (K,), values (K,)): MLP neurons held at these values at every position
    (``charnn sample --clamp``, ablation); the rest of the model sees the held values.
    mute: layer -> heads (K,): heads whose output is replaced by zero (head ablation).
    """

    att: bool = False
    mlp: bool = False
    resid: bool = False
    clamped: dict = field(default_factory=dict)
    mute: dict = field(default_factory=dict)

    def edits(self) -> "Probe":
        """The same holds and mutes, keeping nothing (for re-reading the kept characters on a slide)."""
        return Probe(clamped=self.clamped, mute=self.mute)


class Attention(nn.Module):
    """Causal multi-head self-attention over the cached keys and values and the new ones."""

    def __init__(self, cfg: ModelConfig, index: int = 0):
        super().__init__()
        self.index = index  # the layer's, for a Probe's mutes
        self.heads, self.dropout = cfg.heads, cfg.dropout
        self.qkv = nn.Linear(cfg.embed, 3 * cfg.embed)
        self.proj = nn.Linear(cfg.embed, cfg.embed)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, past: torch.Tensor | None, probe: Probe | None = None):
        """x (B, T, E); past (2, B, heads, P, head_dim) or None -> out (B, T, E), kv (2, B, heads, P+T,
        head_dim), and the attention rows (B, heads, T, P+T) if the probe keeps them."""
        B, T, E = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, E // self.heads).permute(2, 0, 3, 1, 4)  # each (B, nh, T, hd)
        P = 0
        if past is not None and past.shape[3]:
            P = past.shape[3]
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)  # (B, nh, P+T, hd)
        mask = causal_mask(P, T, x.device) if P and T > 1 else None
        drop = self.dropout if self.training else 0.0
        if probe is not None and probe.att:
            att = attention_rows(q, k, P)
            y = att @ v
        else:
            y = attend(q, k, v, mask, drop, is_causal=not P and T > 1)
            att = None
        if probe is not None and self.index in probe.mute:
            y = y.clone()
            y[:, probe.mute[self.index]] = 0
        y = y.transpose(1, 2).reshape(B, T, E)
        return self.drop(self.proj(y)), torch.stack([k, v]), att


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask, dropout: float, is_causal: bool) -> torch.Tensor:
    """scaled_dot_product_attention, in fp32 when the CPU would run it in bf16 (under --precision
    bf16's autocast), returned in the inputs' dtype. PyTorch's CPU flash attention takes about 3x
    as long backward in bf16 as in fp32 (18 against 6.5 ms for a batch of 24 x 6 heads x 64 x 32,
    measured with torch 2.13; docs/notes.md), which made a bf16 step of the gpt-muon model no
    faster than fp32 although its matrix products ran twice as fast; the attention's own
    arithmetic is small. On a GPU bf16 attention is the fast path and stays."""
    if q.device.type != "cpu" or q.dtype != torch.bfloat16:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)
    with torch.autocast("cpu", enabled=False):  # autocast would cast the fp32 inputs back to bf16
        y = F.scaled_dot_product_attention(
            q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout, is_causal=is_causal
        )
    return y.to(q.dtype)


def causal_mask(past: int, new: int, device) -> torch.Tensor:
    """(new, past + new) bool: query i (at absolute position past + i) sees keys 0..past + i."""
    return torch.arange(past + new, device=device)[None, :] <= (past + torch.arange(new, device=device))[:, None]


def attention_rows(q: torch.Tensor, k: torch.Tensor, past: int) -> torch.Tensor:
    """The softmax rows scaled_dot_product_attention computes, written out (for looking inside):
    q (B, nh, T, hd), k (B, nh, P+T, hd) -> (B, nh, T, P+T), each row summing to 1."""
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~causal_mask(past, q.shape[2], q.device), float("-inf"))
    return torch.softmax(scores.float(), -1).to(q.dtype)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, index: int = 0):
        super().__init__()
        self.index = index
        self.ln1 = nn.LayerNorm(cfg.embed)
        self.attn = Attention(cfg, index)
        self.ln2 = nn.LayerNorm(cfg.embed)
        self.fc = nn.Linear(cfg.embed, 4 * cfg.embed)
        self.proj = nn.Linear(4 * cfg.embed, cfg.embed)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, past: torch.Tensor | None, probe: Probe | None = None):
        """-> the residual stream after the block, its kv, the attention rows and the MLP neurons
        (the last two only if the probe keeps them, else None)."""
        a, kv, att = self.attn(self.ln1(x), past, probe)
        x = x + a
        m = F.gelu(self.fc(self.ln2(x)))
        if probe is not None and self.index in probe.clamped:
            neurons, values = probe.clamped[self.index]
            m = m.clone()
            m[..., neurons] = values.to(m.dtype)
        keep = m if probe is not None and probe.mlp else None
        return x + self.drop(self.proj(m)), kv, att, keep


class TiedReadout(nn.Module):
    """The read-out with the embedding's weights (nanoGPT's weight tying: one matrix maps ids to
    vectors and vectors to scores). The weight is not registered here, so a checkpoint holds it
    once, as embed.weight; ``weight`` reads it for whoever asks the read-out (its device, its dtype)."""

    def __init__(self, embed: nn.Embedding):
        super().__init__()
        self._embed = (embed,)  # a tuple, not a submodule: the parent owns and moves the embedding
        self.bias = nn.Parameter(torch.zeros(embed.num_embeddings))

    @property
    def weight(self) -> torch.Tensor:
        return self._embed[0].weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.weight, self.bias)


class CharTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.buildable()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed)
        if cfg.labels:  # a label's vector, added to every position's (charnn.model.inputs)
            self.label_embed = nn.Embedding(cfg.labels, cfg.embed)
        self.pos = nn.Embedding(cfg.block, cfg.embed)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.embed)
        self.head = TiedReadout(self.embed)  # tied: without it a small model took far longer to learn to copy
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2's: N(0, 0.02) weights, zero biases, the projections into the residual stream
        scaled by 1/sqrt(2 L) so that its variance does not grow with depth."""
        for name, p in self.named_parameters():
            if p.dim() == 1:  # biases start at zero, LayerNorm's gains at one (their default)
                if name.endswith("bias"):
                    nn.init.zeros_(p)
                continue
            std = 0.02 / math.sqrt(2 * self.cfg.layers) if name.endswith("proj.weight") else 0.02
            nn.init.normal_(p, 0.0, std)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def keep(self) -> int:
        """How many characters the cache keeps when it is rebuilt (see the module's docstring)."""
        return self.cfg.block // 2

    def init_state(self, batch: int, device=None) -> Cache:
        """The empty cache for `batch` streams."""
        w = self.head.weight
        device = device or w.device
        c = self.cfg
        kv = torch.zeros(c.layers, 2, batch, c.heads, 0, c.embed // c.heads, device=device, dtype=w.dtype)
        return torch.zeros(batch, 0, dtype=torch.long, device=device), kv

    def forward(self, x: torch.Tensor, state: Cache | None = None):
        """x: (B, T) int64 ids -> logits (B, T, V) and the cache after x (None in training)."""
        if self.training:
            if x.shape[1] > self.cfg.block:
                raise ValueError(f"a training window of {x.shape[1]} is longer than the block ({self.cfg.block})")
            h, _, _ = self.trunk(x, None)
            return self.head(h), None
        return self._read(x, state)

    def _read(self, x: torch.Tensor, state: Cache | None, probe: Probe | None = None, hook=None):
        """Read x after the cache, sliding the window when it fills. probe: what to keep and hold
        inside (``Probe``); hook(t0, past, inside) sees what each piece kept: t0 its first
        position in x, past how many cached characters it read after."""
        ids, kv0 = state if state is not None else self.init_state(x.shape[0], x.device)
        kv: torch.Tensor | None = kv0
        outs, t, T = [], 0, x.shape[1]
        while t < T:
            if ids.shape[1] >= self.cfg.block:  # full: rebuild from the last block/2 characters
                ids = ids[:, ids.shape[1] - self.keep :]
                kv = self.trunk(ids, None, probe.edits() if probe else None)[1] if self.keep else None
            n = min(T - t, self.cfg.block - ids.shape[1])
            piece = x[:, t : t + n]
            h, kv, extra = self.trunk(piece, kv, probe)
            if hook is not None:
                hook(t, ids.shape[1], extra)
            ids = torch.cat([ids, piece], 1)
            outs.append(self.head(h))
            t += n
        logits = torch.cat(outs, 1) if outs else self.head.weight.new_zeros(x.shape[0], 0, self.cfg.vocab_size)
        if kv is None:
            kv = self.init_state(x.shape[0], x.device)[1]
        return logits, (ids, kv)

    @torch.no_grad()
    def read_inside(self, ids: torch.Tensor):
        """Read ids (N,) as evaluation does (the window sliding) and keep what happened inside:
        -> logits (N, V), "att" (L, heads, N, block): att[l, h, t, j] is the weight head h of
        layer l put, reading character t, on character t - j (0 where t - j was not visible);
        "context" (N,): how many characters before t were visible; "resid" (L, N, E): the
        residual stream after each block."""
        c, N = self.cfg, len(ids)
        att = torch.zeros(c.layers, c.heads, N, c.block)
        context = torch.zeros(N, dtype=torch.long)
        resid = []

        def keep(t0: int, past: int, inside: dict) -> None:
            a = inside["att"][:, 0]  # (L, heads, n, past + n)
            for i in range(a.shape[2]):
                att[:, :, t0 + i, : past + i + 1] = a[:, :, i, : past + i + 1].flip(-1)
                context[t0 + i] = past + i
            resid.append(inside["resid"][:, 0])

        logits, _ = self._read(ids[None], None, Probe(att=True, resid=True), keep)
        return logits[0], {"att": att, "context": context, "resid": torch.cat(resid, 1)}

    def trunk(self, x: torch.Tensor, kv: torch.Tensor | None, probe: Probe | None = None):
        """x (B, n) read after the cached kv (L, 2, B, nh, P, hd) -> the final normed residual
        stream (B, n, E), the new kv (L, 2, B, nh, P+n, hd), and what the probe keeps (None without
        one): "att" (L, B, nh, n, P+n) the attention rows, "mlp" (L, B, n, 4E) the MLP neurons,
        "resid" (L, B, n, E) the residual stream after each block."""
        P = kv.shape[4] if kv is not None else 0
        pos = torch.arange(P, P + x.shape[1], device=x.device)
        h = self.drop(self._inputs(x) + self.pos(pos))  # (B, n, E)
        kvs: list[torch.Tensor] = []
        kept: dict[str, list[torch.Tensor]] = {"att": [], "mlp": [], "resid": []}
        for i, block in enumerate(self.blocks):
            h, kv_i, a, m = block(h, kv[i] if kv is not None else None, probe)
            kvs.append(kv_i)
            kept["att"].append(a)
            kept["mlp"].append(m)
            kept["resid"].append(h)
        extra = None
        if probe is not None:
            extra = {k: torch.stack(v) for k, v in kept.items() if getattr(probe, k)}
        return self.ln_f(h), torch.stack(kvs) if not self.training else None, extra

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The characters' embeddings, plus their labels' for a labelled model (x = char + V * label)."""
        V = self.cfg.vocab_size
        return self.embed(x) if not self.cfg.labels else self.embed(x % V) + self.label_embed(x // V)

    def loss(self, x: torch.Tensor, y: torch.Tensor, state: Cache | None = None):
        """Mean cross-entropy in nats over targets y >= 0 (characters: a label is not predicted),
        and the state (see forward)."""
        logits, state = self(x, state)
        if self.cfg.labels:
            y = torch.where(y >= 0, y % self.cfg.vocab_size, y)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-1), state


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every weight CharTransformer(cfg) holds, computed without allocating anything."""
    E, V = cfg.embed, cfg.vocab_size
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (V, E), "pos.weight": (cfg.block, E)}
    for k in range(cfg.layers):
        b = f"blocks.{k}."
        shapes.update(
            {
                b + "ln1.weight": (E,),
                b + "ln1.bias": (E,),
                b + "attn.qkv.weight": (3 * E, E),
                b + "attn.qkv.bias": (3 * E,),
                b + "attn.proj.weight": (E, E),
                b + "attn.proj.bias": (E,),
                b + "ln2.weight": (E,),
                b + "ln2.bias": (E,),
                b + "fc.weight": (4 * E, E),
                b + "fc.bias": (4 * E,),
                b + "proj.weight": (E, 4 * E),
                b + "proj.bias": (E,),
            }
        )
    shapes.update({"ln_f.weight": (E,), "ln_f.bias": (E,), "head.bias": (V,)})  # the read-out's weight is embed's
    return shapes


class CacheStepper:
    """step(ids (B,)) -> logits (B, V): CharTransformer's forward for one new character, on a
    cache allocated once at the block's length, so that nothing is copied per character but the
    new keys and values (the forward's cache is rebuilt by concatenation: fine for a window of
    text, costly one character at a time). It slides as the module's docstring says; tests check
    it against ``CharTransformer.forward``. clamped: layer -> (neurons, values), MLP neurons held at
    every step (``charnn sample --clamp``; the same holds as a ``Probe``'s)."""

    def __init__(self, model: CharTransformer, state: Cache, clamped: dict | None = None):
        self.model, c = model, model.cfg
        self.clamped = clamped or {}
        ids, kv = state
        B, P = ids.shape
        self.ids = ids.new_zeros(B, c.block)
        self.kv = kv.new_zeros(c.layers, 2, B, c.heads, c.block, c.embed // c.heads)
        self.ids[:, :P] = ids
        self.kv[..., :P, :] = kv
        self.P = P
        # each layer's weights and cache views, fetched once: module attribute lookups cost more
        # than the arithmetic of a small model at batch 1
        self.layers = [
            (
                b.ln1.weight,
                b.ln1.bias,
                b.attn.qkv.weight,
                b.attn.qkv.bias,
                b.attn.proj.weight,
                b.attn.proj.bias,
                b.ln2.weight,
                b.ln2.bias,
                b.fc.weight,
                b.fc.bias,
                b.proj.weight,
                b.proj.bias,
                self.kv[i, 0],
                self.kv[i, 1],
            )
            for i, b in enumerate(cast("list[Block]", model.blocks))
        ]
        self.out = (model.ln_f.weight, model.ln_f.bias, model.head.weight, model.head.bias)
        self.shape = (c.embed,)

    @torch.no_grad()
    def step(self, ids: torch.Tensor) -> torch.Tensor:
        m = self.model
        if self.P >= m.cfg.block:  # full: rebuild from the last block/2 characters, as forward does
            self.ids[:, : m.keep] = self.ids[:, self.P - m.keep : self.P].clone()
            if m.keep:
                self.kv[..., : m.keep, :] = m.trunk(self.ids[:, : m.keep], None, Probe(clamped=self.clamped))[1]
            self.P = m.keep
        P, B, E, heads = self.P, ids.shape[0], self.shape, m.cfg.heads
        h = (m._inputs(ids) if m.cfg.labels else m.embed.weight[ids]) + m.pos.weight[P]  # (B, E); indexing: per character
        for i, (ln1w, ln1b, qkvw, qkvb, aw, ab, ln2w, ln2b, fcw, fcb, pw, pb, keys, values) in enumerate(self.layers):
            q, k, v = F.linear(F.layer_norm(h, E, ln1w, ln1b), qkvw, qkvb).view(B, 3, heads, -1).unbind(1)  # (B, nh, hd)
            keys[:, :, P] = k
            values[:, :, P] = v
            y = F.scaled_dot_product_attention(q[:, :, None], keys[:, :, : P + 1], values[:, :, : P + 1])  # (B, nh, 1, hd)
            h = h + F.linear(y.view(B, -1), aw, ab)
            m_i = F.gelu(F.linear(F.layer_norm(h, E, ln2w, ln2b), fcw, fcb))  # (B, 4E)
            if i in self.clamped:
                m_i[:, self.clamped[i][0]] = self.clamped[i][1].to(m_i.dtype)
            h = h + F.linear(m_i, pw, pb)
        self.ids[:, P] = ids
        self.P += 1
        lnw, lnb, hw, hb = self.out
        return F.linear(F.layer_norm(h, E, lnw, lnb), hw, hb)

    def state(self) -> Cache:
        return self.ids[:, : self.P].clone(), self.kv[..., : self.P, :].clone()
