"""Time to quality: validation loss on tiny Shakespeare after a fixed wall-time budget.

Trains charnn's default preset with nanoGPT's split (first 90% train, last 10% validation) for
BUDGET seconds, and in the same run the strongest plain recipe we know (``plain_recipe``: a
2x512 nn.LSTM with carried state, AdamW with warmup and cosine decay), then prints both
full-validation losses and their ratio. `make bench` runs it per budget, with char-rnn's defaults too.

    python bench/time_to_quality.py [--budget 60] [--preset default] [--skip-reference]
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from charnn.config import RunConfig, apply_preset
from charnn.data import prepare
from charnn.evaluate import evaluate
from charnn.trainer import train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


def plain_recipe(ids: np.ndarray, n_train: int, vocab: int, budget: float, layers: int = 2, hidden: int = 512,
                 embed: int = 64, dropout: float = 0.2, batch: int = 32, seq: int = 64, lr: float = 3e-3,
                 warmup: int = 100, weight_decay: float = 0.01, char_rnn: bool = False) -> tuple[float, int]:
    """The strongest plain recipes we know, in a few lines of PyTorch (issue #16).

    Default: the recipe that drew level with charnn's old `large` preset at 10 minutes: 2x512 with
    dropout 0.2, a 64-wide embedding, 32 streams x 64 characters with the hidden state carried
    from window to window, AdamW (betas 0.9, 0.99) at 3e-3 with 100 warmup steps and a cosine
    decay to 5% over the wall-time budget, gradient clipping at 1; weight_decay is AdamW's
    (PyTorch's default 0.01 unless given).
    char_rnn=True: char-rnn's defaults (2x128, one-hot input, 50 x 50, RMSprop 2e-3 with decay
    0.95, the rate multiplied by 0.97 each epoch after the 10th, gradients clamped at 5).
    """
    torch.manual_seed(0)
    if char_rnn:
        layers, hidden, embed, dropout, batch, seq, lr = 2, 128, vocab, 0.0, 50, 50, 2e-3
    emb = torch.nn.Embedding(vocab, embed)
    if char_rnn:  # one-hot input: an identity embedding, not trained
        emb.weight.data = torch.eye(vocab)
        emb.weight.requires_grad_(False)
    lstm = torch.nn.LSTM(embed, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
    head = torch.nn.Linear(hidden, vocab)
    drop = torch.nn.Dropout(dropout)
    params = [q for q in (*emb.parameters(), *lstm.parameters(), *head.parameters()) if q.requires_grad]
    opt = (torch.optim.RMSprop(params, lr=lr, alpha=0.95) if char_rnn else
           torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay))
    data = torch.from_numpy(np.asarray(ids[:n_train], dtype=np.int64))
    stream = (n_train - 1) // batch
    starts = torch.arange(batch)[:, None] * stream  # (B, 1)
    window = torch.arange(seq + 1)[None, :]  # (1, T+1)
    t0, steps, pos, epoch, state = time.perf_counter(), 0, 0, 0, None
    while (elapsed := time.perf_counter() - t0) < budget:
        if char_rnn:
            rate = lr * 0.97 ** max(0, epoch - 10)
        else:
            rate = lr * min(1.0, (steps + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * elapsed / budget)))
        for g in opt.param_groups:
            g["lr"] = rate
        chunk = data[starts + pos + window]  # (B, T+1)
        out, state = lstm(drop(emb(chunk[:, :-1])), state)
        state = tuple(s.detach() for s in state)
        loss = torch.nn.functional.cross_entropy(head(drop(out)).reshape(-1, vocab), chunk[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        if char_rnn:
            for q in params:
                q.grad.clamp_(-5, 5)
        else:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        steps += 1
        pos += seq
        if pos + seq + 1 > stream:  # an epoch: every stream starts over
            pos, state, epoch = 0, None, epoch + 1

    class Wrapped(torch.nn.Module):  # evaluate() expects a CharRNN-shaped module
        def __init__(self):
            super().__init__()
            self.head = head

        def forward(self, x, state=None):
            out, state = lstm(emb(x), state)
            return head(out), state

    lstm.eval()
    return evaluate(Wrapped().eval(), np.asarray(ids[n_train:])).loss, steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args()
    if not DATA.exists():
        print(f"skipped: {DATA} is absent")
        return 0
    cfg = RunConfig()
    apply_preset(cfg, args.preset)
    cfg.data.text = str(DATA)
    cfg.data.split = (0.9, 0.1, 0.0)
    cfg.train.max_time = args.budget
    cfg.train.eval_every = 10**9  # no evaluation inside the budget; one full evaluation after it
    cfg.train.snapshot_steps = ()
    with tempfile.TemporaryDirectory() as d:
        res = train(cfg, Path(d) / "run", progress=False)
    enc = prepare(str(DATA))
    n_train = int(len(enc.ids) * 0.9)
    rows = [("charnn " + args.preset, res.last_val_loss, res.steps)]
    if not args.skip_reference:
        ref_loss, ref_steps = plain_recipe(enc.ids, n_train, len(enc.vocab), args.budget)
        rows.append(("plain nn.LSTM 2x512 recipe (reference)", ref_loss, ref_steps))
    print(f"\nmachine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, python {platform.python_version()}")
    print(f"tiny Shakespeare, first 90% train / last 10% val ({len(enc.ids) - n_train:,} chars), {args.budget:g} s budget\n")
    print("| model | steps | val loss (nats) | val bpc | ratio to reference |")
    print("|---|---|---|---|---|")
    ref = rows[-1][1] if len(rows) > 1 else None
    for name, loss, steps in rows:
        ratio = f"{loss / ref:.3f}" if ref else "-"
        print(f"| {name} | {steps} | {loss:.4f} | {loss / math.log(2):.3f} | {ratio} |")
    target = 1.50
    print(f"\ntarget: charnn <= {target} nats -> {'met' if res.last_val_loss <= target else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
