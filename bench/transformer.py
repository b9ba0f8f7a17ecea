"""Transformer benchmarks (issue #35): sampling with the cache, and time to quality against a plain
transformer written from nanoGPT's published recipe, in the same run.

    python bench/transformer.py --only sampling
    python bench/transformer.py --only ttq --budget 60 --grid 60s
    python bench/transformer.py --only ttq --budget 600 --grid 10min
    python bench/transformer.py --only ttq --plain "lr=3e-3" --charnn "lr=6e-3;lr=1e-2"

The plain reference (``plain_gpt``) is the few dozen lines a capable user would write from
nanoGPT's README: pre-norm blocks, causal ``scaled_dot_product_attention``, tied input and output
embeddings, random windows of the block, AdamW (betas 0.9, 0.99, weight decay 0.1 on matrices),
linear warmup then cosine to a tenth over the wall-time budget, clipping at 1. Both models are
scored on the whole validation split with the same context rule (windows of the block advancing
by half of it, each character read with block/2 to block - 1 characters before it), so the
losses compare. Runs alternate (plain, charnn, plain, ...) so the machine's drift falls on both.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from suite import _paired_times
from time_to_quality import _settings as _variant
from time_to_quality import alternate, charnn_run
from torch import nn

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


# ---- the plain reference ----------------------------------------------------------------------

class _Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0)
        x = x + self.drop(self.out(y.transpose(1, 2).reshape(B, T, C)))
        return x + self.drop(self.down(F.gelu(self.up(self.norm2(x)))))


class PlainGPT(nn.Module):
    def __init__(self, vocab: int, layers: int, heads: int, width: int, block: int, dropout: float):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(block, width)
        self.blocks = nn.Sequential(*[_Block(width, heads, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)
        for name, p in self.named_parameters():
            if p.dim() > 1:
                nn.init.normal_(p, 0, 0.02 / math.sqrt(2 * layers) if name.endswith(("out.weight", "down.weight"))
                                else 0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, x):
        h = self.drop(self.tok(x) + self.pos(torch.arange(x.shape[1])))
        return self.norm(self.blocks(h)) @ self.tok.weight.T  # tied read-out


@torch.no_grad()
def sliding_loss(logits_of, ids: np.ndarray, block: int, batch: int = 32) -> float:
    """Mean loss over every character of ids but the first: windows of `block` advancing by
    block/2, each scoring the characters it has not scored yet (the first window scores all)."""
    stride = max(1, block // 2)
    starts = list(range(0, max(1, len(ids) - block), stride))
    if starts[-1] + block < len(ids) - 1:
        starts.append(len(ids) - 1 - block)
    total, count, scored_to = 0.0, 0, 0  # scored_to: targets up to this index are done
    for i in range(0, len(starts), batch):
        group = starts[i:i + batch]
        x = torch.as_tensor(np.stack([ids[s:s + block] for s in group]), dtype=torch.long)
        y = torch.as_tensor(np.stack([ids[s + 1:s + block + 1] for s in group]), dtype=torch.long)
        losses = F.cross_entropy(logits_of(x).flatten(0, 1).float(), y.flatten(), reduction="none").view(y.shape)
        for row, s in enumerate(group):
            first = max(scored_to, s + 1) - (s + 1)  # targets of this window not scored before
            total += float(losses[row, first:].double().sum())
            count += block - first
            scored_to = s + 1 + block
    return total / count


def plain_gpt(ids: np.ndarray, n_train: int, vocab: int, budget: float, layers=4, heads=4, width=128, block=64,
              batch=12, lr=1e-3, dropout=0.0, warmup=100, min_lr_frac=0.1, weight_decay=0.1,
              precision="fp32", seed=1337) -> tuple[float, int]:
    """Train for `budget` seconds of wall time; -> (validation loss in nats, steps). precision
    "bf16" autocasts forward and backward to bfloat16 (weights and AdamW stay float32), as a user
    would switch it on for a CPU with bf16 units."""
    torch.manual_seed(seed)
    cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    model = PlainGPT(vocab, layers, heads, width, block, dropout)
    decay = [p for p in model.parameters() if p.dim() > 1]
    rest = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0}],
                            lr=lr, betas=(0.9, 0.99), fused=True)
    train_ids = torch.as_tensor(np.asarray(ids[:n_train], dtype=np.int64))
    gen = torch.Generator().manual_seed(seed)
    start, step = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - start) < budget:
        frac = elapsed / budget
        rate = lr * min(1.0, (step + 1) / warmup) * (min_lr_frac + (1 - min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = rate
        at = torch.randint(0, n_train - block - 1, (batch,), generator=gen)
        x = torch.stack([train_ids[a:a + block] for a in at])
        y = torch.stack([train_ids[a + 1:a + block + 1] for a in at])
        with cast:
            loss = F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
    model.eval()  # scored in float32, as charnn scores a bf16 run
    return sliding_loss(model, np.asarray(ids[n_train:]), block), step


# ---- charnn's transformer -------------------------------------------------------------------------

def charnn_gpt(text: Path, budget: float, preset: str = "gpt-cpu", **overrides) -> tuple[float, int]:
    """charnn's run for `budget` seconds; -> (its end-of-run loss on the whole validation split, steps)."""
    return charnn_run(text, budget, preset, **overrides)


# The sweeps, as data (issue #35): each entry is one run's settings over the recipe ("plain": the
# keyword arguments of plain_gpt; "charnn": settings over the gpt-cpu preset). --grid picks one;
# --plain/--charnn replace it. Results and the reasons for each grid are in
# docs/transformer-benchmarks.md.
GRIDS = {
    # round 1 (2026-12-06): learning rate, bf16 and width for the plain recipe; EMA and bf16 for charnn
    "60s": {"plain": ["lr=3e-3", "lr=6e-3", "lr=3e-3,precision=bf16", "lr=6e-3,precision=bf16",
                      "lr=3e-3,width=192,heads=6", "lr=3e-3,layers=2,width=192,heads=6"],
            "charnn": ["lr=6e-3", "lr=6e-3,ema=0.995", "lr=6e-3,precision=bf16", "lr=6e-3,ema=0.995,precision=bf16"]},
    # round 2: around round 1's best of each (plain 2x192 at 3e-3; charnn 4x128 with EMA), both at 2x192
    "60s-2": {"plain": ["lr=3e-3,layers=2,width=192,heads=6", "lr=5e-3,layers=2,width=192,heads=6",
                        "lr=2e-3,layers=2,width=192,heads=6", "lr=3e-3,layers=3,width=160,heads=5"],
              "charnn": ["lr=6e-3,ema=0.995", "lr=4e-3,ema=0.995,layers=2,embed=192,hidden=192,heads=6",
                         "lr=6e-3,ema=0.995,layers=2,embed=192,hidden=192,heads=6",
                         "lr=4e-3,ema=0.99,layers=2,embed=192,hidden=192,heads=6"]},
    # the first 10-minute pair (2026-12-06): one shape for both, charnn with its weight average
    "10min": {"plain": ["lr=3e-3,layers=4,width=192,heads=6"],
              "charnn": ["lr=3e-3,ema=0.999,layers=4,embed=192,hidden=192,heads=6"]},
    # round 5 (2026-12-06): charnn with --optimizer muon, and a batch of 24 windows, which Muon's
    # fixed cost per step (5 Newton-Schulz iterations per matrix) asks for; the plain recipe gets
    # the same batch in its sweep
    "60s-muon": {"plain": ["lr=3e-3,layers=2,width=192,heads=6", "lr=3e-3,layers=2,width=192,heads=6,batch=24",
                           "lr=5e-3,layers=2,width=192,heads=6,batch=24"],
                 "charnn": ["lr=6e-3,ema=0.995,layers=2,embed=192,hidden=192,heads=6,optimizer=muon,batch_size=24",
                            "lr=4e-3,ema=0.995,layers=2,embed=192,hidden=192,heads=6,optimizer=muon,batch_size=24"]},
    # 10 minutes with Muon (2026-12-06): the 10-minute pair's plain 4x192 against charnn at that shape
    "10min-muon": {"plain": ["lr=3e-3,layers=4,width=192,heads=6"],
                   "charnn": ["lr=5e-3,ema=0.999,layers=4,embed=192,hidden=192,heads=6,optimizer=muon,batch_size=24"]},
    # the 10-minute plain sweep (2026-12-06, round 1 of it): around the pairs' plain 4x192 at 3e-3
    # (1.52-1.53 twice): lower and higher learning rates, Muon's batch of 24, and depth
    "10min-sweep-2": {"plain": ["lr=2e-3,layers=4,width=192,heads=6", "lr=5e-3,layers=4,width=192,heads=6",
                                "lr=3e-3,layers=4,width=192,heads=6,batch=24", "lr=3e-3,layers=6,width=192,heads=6"],
                      "charnn": ["lr=5e-3,ema=0.999,layers=4,embed=192,hidden=192,heads=6,optimizer=muon,batch_size=24"]},
    # the 10-minute sweep's best (plain 4x192 at 2e-3) and a lower rate, against charnn, rounds 2-3
    "10min-best": {"plain": ["lr=1.5e-3,layers=4,width=192,heads=6", "lr=2e-3,layers=4,width=192,heads=6"],
                   "charnn": ["lr=5e-3,ema=0.999,layers=4,embed=192,hidden=192,heads=6,optimizer=muon,batch_size=24"]},
    # bf16 (2026-12-07): the attention kept fp32 on the CPU made charnn's bf16 step 1.5-1.6x its fp32 one
    # (bench/precision.py); the plain recipe's best of round 5 in fp32 and in bf16 (a user would switch
    # it on), against charnn's gpt-muon settings in each precision
    "60s-bf16": {"plain": ["lr=3e-3,layers=2,width=192,heads=6", "lr=3e-3,layers=2,width=192,heads=6,precision=bf16"],
                 "charnn": ["lr=6e-3,ema=0.995,layers=2,embed=192,hidden=192,heads=6,optimizer=muon,batch_size=24",
                            "lr=6e-3,ema=0.995,layers=2,embed=192,hidden=192,heads=6,optimizer=muon,batch_size=24,"
                            "precision=bf16"]},
    # a second grid (three more rounds): the best plain (bf16) against charnn's bf16 with 24 windows
    # and with 32 (Muon's fixed cost per step spread over more characters)
    "60s-bf16-2": {"plain": ["lr=3e-3,layers=2,width=192,heads=6,precision=bf16"],
                   "charnn": ["lr=6e-3,ema=0.995,layers=2,embed=192,hidden=192,heads=6,optimizer=muon,batch_size=24,"
                              "precision=bf16",
                              "lr=6e-3,ema=0.995,layers=2,embed=192,hidden=192,heads=6,optimizer=muon,batch_size=32,"
                              "precision=bf16"]},
    # the same at 10 minutes: the swept best plain recipe (4x192 at 2e-3) in fp32 and in bf16, against
    # charnn's 10-minute Muon settings in bf16
    "10min-bf16": {"plain": ["lr=2e-3,layers=4,width=192,heads=6", "lr=2e-3,layers=4,width=192,heads=6,precision=bf16"],
                   "charnn": ["lr=5e-3,ema=0.999,layers=4,embed=192,hidden=192,heads=6,optimizer=muon,batch_size=24,"
                              "precision=bf16"]},
    # to sweep next: depth, width and context at 10 minutes
    "10min-sweep": {"plain": ["lr=3e-3", "lr=3e-3,layers=2,width=192,heads=6",
                              "lr=3e-3,layers=6,width=192,heads=6,block=128",
                              "lr=2e-3,layers=6,width=256,heads=8,block=128,precision=bf16"],
                    "charnn": ["lr=3e-3,ema=0.999", "lr=3e-3,ema=0.999,layers=6,embed=192,hidden=192,heads=6,block=128,seq_len=128"]},
}


def ttq(budget: float, plain: list[str], charnn: list[str], repeats: int) -> None:
    """plain_gpt's runs against charnn's (settings over the gpt-cpu preset), alternated (as the
    LSTM's sweep: time_to_quality.alternate)."""
    from charnn.data import prepare

    if not DATA.exists():
        print(f"skipped: {DATA} is absent", file=sys.stderr)
        return
    enc = prepare(str(DATA))
    n_train = int(len(enc.ids) * 0.9)
    alternate(budget, plain, charnn, repeats,
              lambda spec: plain_gpt(enc.ids, n_train, len(enc.vocab), budget, **_variant(spec)),
              lambda spec: charnn_gpt(DATA, budget, **_variant(spec)))


# ---- sampling with the cache --------------------------------------------------------------------

def sampling(length: int = 1000) -> None:
    """charnn's cached sampling against a loop that re-reads the whole context (up to the block)
    for every character, at batch 1; both draw the same characters (checked)."""
    print("| model | cached chars/s | re-reading chars/s | ratio | same text |\n|---|---|---|---|---|")
    for name, shape in (("gpt-cpu 4x128 block 64", (4, 4, 128, 64)), ("gpt 6x384 block 256", (6, 6, 384, 256))):
        c, r, same = sampling_speeds(*shape, length)
        print(f"| {name} | {c:,.0f} | {r:,.0f} | x{c / r:.1f} | {'yes' if same else 'NO'} |", flush=True)


def sampling_speeds(layers: int, heads: int, width: int, block: int, length: int) -> tuple[float, float, bool]:
    """(cached chars/s, re-reading chars/s, whether both drew the same characters) at batch 1."""
    from charnn.config import ModelConfig
    from charnn.model import build
    from charnn.sample import generate, sample_next
    from charnn.vocab import Vocab

    vocab = Vocab([10] + list(range(32, 127)))
    torch.manual_seed(0)
    model = build(ModelConfig(cell="transformer", layers=layers, heads=heads, embed=width, hidden=width,
                              block=block, vocab_size=96)).eval()

    def reread():  # the context the sliding window gives each character, read afresh every time
        gen, ids, out = torch.Generator().manual_seed(0), [0], []
        with torch.no_grad():
            for _ in range(length):
                t = len(ids) - 1
                seen = t if t < block else block // 2 + (t - block) % (block - block // 2)
                logits = model(torch.tensor([ids[t - seen:]]))[0][:, -1]
                nxt = sample_next(logits, gen, 1.0)
                out.append(nxt.tolist())
                ids.append(int(nxt[0]))
        return out

    def cached():
        return list(generate(model, vocab, length=length, num=1, seed=0, temperature=1.0))

    same = reread() == cached()
    tc, tr = _paired_times(cached, reread, repeats=3, warmup=0)
    return length / tc, length / tr, same


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="sampling,ttq", help="sampling, ttq")
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--grid", default="60s", choices=sorted(GRIDS), help="which sweep of GRIDS to run")
    ap.add_argument("--plain", help="plain runs instead of the grid's: plain_gpt settings, ';' between runs "
                                    "(e.g. lr=3e-3,width=192,heads=6;lr=6e-3,precision=bf16)")
    ap.add_argument("--charnn", help="charnn runs instead of the grid's: settings over the gpt-cpu preset, ';' "
                                     "between runs (e.g. lr=1e-2,precision=bf16)")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    only = set(args.only.split(","))
    if "sampling" in only:
        sampling()
    if "ttq" in only:
        grid = GRIDS[args.grid]
        plain = args.plain.split(";") if args.plain is not None else grid["plain"]
        charnn = args.charnn.split(";") if args.charnn is not None else grid["charnn"]
        ttq(args.budget, plain, charnn, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
