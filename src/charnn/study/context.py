"""How much context a model uses: its loss when it may read only the last k characters before each
scored character (its state rebuilt from those k alone), for k = 1, 2, 4, ..., beside the loss of
n-gram models of each order (which read n - 1 characters) and of the model reading everything.

Where the curve stops falling is the context the model uses; whether it falls past the training
window (truncated BPTT's --seq-len, marked on the plot) says whether the carried state lets it use
more than it was ever trained through.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from charnn import checkpoint as ckpt
from charnn.errors import CharnnError
from charnn.evaluate import char_losses, model_text
from charnn.files import write_outputs
from charnn.study.ngram import KneserNey
from charnn.subject import require_characters

CSV_MARKER = "what,context,loss"
PNG_MARKER = b"charnn context"
BATCH = 256  # windows read at once


@dataclass
class ContextReport:
    train_seq_len: int
    positions: int
    what: str
    unlimited: float = float("nan")
    context: list[dict] = field(default_factory=list)  # {"k", "loss"}
    ngram: list[dict] = field(default_factory=list)  # {"order", "loss"}

    def to_dict(self) -> dict:
        return {
            "train_seq_len": self.train_seq_len,
            "unlimited": self.unlimited,
            "context": self.context,
            "ngram": self.ngram,
            "positions": self.positions,
            "text": self.what,
        }

    def to_csv(self) -> str:
        lines = [CSV_MARKER] + [f"model,{c['k']},{c['loss']:.6f}" for c in self.context]
        lines += [f"model,unlimited,{self.unlimited:.6f}"]
        lines += [f"{g['order']}-gram,{g['order'] - 1},{g['loss']:.6f}" for g in self.ngram]
        return "\n".join(lines) + "\n"


@torch.no_grad()
def limited_loss(model, history: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Mean loss (nats) of history[t] for t in targets, each predicted from the zero state after
    reading only history[t - k : t]."""
    windows = history[targets[:, None] - k + np.arange(k)[None, :]]  # (P, k)
    total = 0.0
    for b in range(0, len(targets), BATCH):
        x = torch.as_tensor(windows[b : b + BATCH], dtype=torch.long)
        logits, _ = model(x)
        y = torch.as_tensor(history[targets[b : b + BATCH]], dtype=torch.long)
        total += float(torch.nn.functional.cross_entropy(logits[:, -1].float(), y, reduction="sum"))
    return total / len(targets)


def check_options(positions: int, max_k: int) -> None:
    """The bounds on --positions and --max-context, in one line each."""
    if max_k < 1 or max_k > 8192 or max_k & (max_k - 1):
        raise CharnnError(f"--max-context must be a power of 2 from 1 to 8192, got {max_k}")
    if not 1 <= positions <= 100_000:
        raise CharnnError(f"--positions must be from 1 to 100000, got {positions}")


def context_use(
    loaded: ckpt.Checkpoint,
    model=None,
    split: str = "val",
    chars: int = 50_000,
    positions: int = 2000,
    max_k: int = 1024,
    orders=tuple(range(1, 10)),
    progress=None,
) -> ContextReport:
    """The losses of `loaded`'s model (built here unless given) for the first `chars` characters of
    `split` (0: all), scored at `positions` places spread evenly over them, each with at least
    max_k characters before it."""
    check_options(positions, max_k)
    say = progress or (lambda _m: None)
    require_characters(loaded, "charnn analyze context")
    model = model if model is not None else loaded.build_model()
    source = model_text(loaded, split=split, context=max_k)
    before = np.asarray(source.before, dtype=np.int64)
    ids = np.asarray(source.ids[:chars] if chars else source.ids, dtype=np.int64)
    history = np.concatenate([before, ids])
    lo = max_k  # every scored character has max_k characters before it
    if len(history) <= lo + 1:
        raise CharnnError(
            f"{source.what} is too short for contexts of {max_k} characters; lower --max-context or use another split"
        )
    targets = np.unique(np.linspace(lo, len(history) - 1, min(positions, len(history) - lo)).astype(np.int64))
    rep = ContextReport(loaded.config.train.seq_len, len(targets), source.what)
    say("the model reading everything")
    full = char_losses(model, history, streams=1)  # one pass from the start; nll[t] = loss of history[t + 1]
    rep.unlimited = float(np.mean(full[targets - 1]))
    k = 1
    while k <= max_k:
        say(f"the model reading {k} characters")
        rep.context.append({"k": k, "loss": limited_loss(model, history, targets, k)})
        k *= 2
    train_ids = model_text(loaded, split="train").ids
    for n in sorted(set(orders)):
        say(f"{n}-gram model")
        p = KneserNey(n, len(loaded.vocab)).fit(train_ids).probs_of(history, lo)  # P(history[t]), t >= lo
        rep.ngram.append({"order": n, "loss": float(-np.log(p[targets - lo]).mean())})
    return rep


def plot(rep: ContextReport, path, title: str) -> None:
    from charnn.plots import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 4.6), dpi=110)
    ax.plot(
        [c["k"] for c in rep.context],
        [c["loss"] for c in rep.context],
        marker="o",
        ms=3,
        label="the model, reading only the last k characters",
    )
    ax.axhline(rep.unlimited, color="C0", ls=":", label=f"the model, reading everything ({rep.unlimited:.3f})")
    grams = [g for g in rep.ngram if g["order"] > 1]
    ax.plot(
        [g["order"] - 1 for g in grams],
        [g["loss"] for g in grams],
        marker="s",
        ms=3,
        color="C1",
        label="n-gram models (context n - 1)",
    )
    ax.axvline(rep.train_seq_len, color="grey", ls="--", lw=1, label=f"training window (--seq-len {rep.train_seq_len})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("characters of context k")
    ax.set_ylabel("loss (nats/char)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Description": PNG_MARKER.decode()})
    plt.close(fig)


def write(rep: ContextReport, out, title: str):
    return write_outputs(out, "context", PNG_MARKER, [CSV_MARKER], lambda f: plot(rep, f, title), rep.to_csv())
