"""Training dynamics: how a model's predictions move, checkpoint by checkpoint, relative to n-gram
models of increasing order ("Visualizing and Understanding Recurrent Networks", section 4.4:
an LSTM first predicts like low-order models, then like higher ones).

For every checkpoint a run kept, and for interpolated Kneser-Ney models of each order trained on
the run's training split, both read the same text (by default the start of the validation split,
with the corpus before it as context); at every position the two next-character distributions
are compared:
- symmetric KL divergence, KL(p || q) + KL(q || p), in nats, averaged over positions;
- Jensen-Shannon divergence, KL(p || m) / 2 + KL(q || m) / 2 with m = (p + q) / 2, in nats.
The closest order at a step is the one with the smallest symmetric KL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from charnn import checkpoint as ckpt
from charnn.errors import CharnnError
from charnn.evaluate import model_text
from charnn.files import write_outputs
from charnn.study.ngram import KneserNey
from charnn.subject import require_characters

CSV_MARKER = "step,val_loss,closest_order"
PNG_MARKER = b"charnn dynamics"
CONTEXT = 1000  # characters of the corpus before the text that warm both models up
FLOOR = 1e-12  # probabilities are floored here before logs (an n-gram never gives 0; softmax can underflow)


def divergences(p: np.ndarray, q: np.ndarray) -> tuple[float, float]:
    """Mean symmetric KL and mean Jensen-Shannon divergence, in nats, between rows of p and q (T, V)."""
    p = np.maximum(p, FLOOR)
    q = np.maximum(q, FLOOR)
    lp, lq = np.log(p), np.log(q)
    skl = ((p - q) * (lp - lq)).sum(1)  # KL(p||q) + KL(q||p)
    m = (p + q) / 2
    lm = np.log(m)
    js = 0.5 * (p * (lp - lm)).sum(1) + 0.5 * (q * (lq - lm)).sum(1)
    return float(skl.mean()), float(js.mean())


@dataclass
class DynamicsReport:
    orders: list[int]
    chars: int
    what: str
    checkpoints: list[dict] = field(default_factory=list)  # {step, val_loss, closest_order, divergence, js}
    ngram_loss: dict[int, float] = field(default_factory=dict)  # order -> nats per char on the same text

    def to_dict(self) -> dict:
        return {
            "orders": self.orders,
            "chars": self.chars,
            "text": self.what,
            "ngram_loss": {str(k): v for k, v in self.ngram_loss.items()},
            "checkpoints": [
                {
                    "step": c["step"],
                    "val_loss": c["val_loss"],
                    "closest_order": c["closest_order"],
                    "divergence": {str(k): v for k, v in c["divergence"].items()},
                    "js": {str(k): v for k, v in c["js"].items()},
                }
                for c in self.checkpoints
            ],
        }

    def to_csv(self) -> str:
        head = [CSV_MARKER] + [f"skl_{n}" for n in self.orders] + [f"js_{n}" for n in self.orders]
        lines = [",".join(head)]
        for c in self.checkpoints:
            lines.append(
                ",".join(
                    [str(c["step"]), f"{c['val_loss']:.6f}", str(c["closest_order"])]
                    + [f"{c['divergence'][n]:.6f}" for n in self.orders]
                    + [f"{c['js'][n]:.6f}" for n in self.orders]
                )
            )
        return "\n".join(lines) + "\n"


def _model_distributions(model, history: np.ndarray, targets_from: int) -> np.ndarray:
    """(T, V) next-character distributions of the model at history[targets_from:], read in one pass."""
    x = torch.as_tensor(np.asarray(history[:-1], dtype=np.int64))[None]
    with torch.no_grad():
        logits, _ = model(x)
    return torch.softmax(logits[0, targets_from - 1 :].double(), -1).numpy()


def dynamics(run, orders=tuple(range(1, 10)), split: str = "val", chars: int = 20_000, progress=None) -> DynamicsReport:
    """The comparison for every kept checkpoint of `run` (RUN/checkpoints, see `--keep-checkpoints`)."""
    steps, last = ckpt.kept_for_analysis(run)
    say = progress or (lambda _msg: None)
    require_characters(last, "charnn analyze dynamics")
    source = model_text(last, split=split, context=CONTEXT)
    ids = np.asarray(source.ids[: chars + 1] if chars else source.ids, dtype=np.int64)
    if len(ids) < 2:
        raise CharnnError(f"{source.what} holds fewer than 2 characters; nothing to compare")
    before = np.asarray(source.before, dtype=np.int64)
    history = np.concatenate([before, ids])
    first = len(before) + 1  # targets: every character of the text but the first (the models' common start)
    targets = history[first:]
    V = len(last.vocab)
    train_ids = model_text(last, split="train").ids
    report = DynamicsReport(sorted(set(orders)), len(targets), source.what)
    grams = {}
    for n in report.orders:
        say(f"{n}-gram model")
        grams[n] = KneserNey(n, V).fit(train_ids).distributions(history, first)  # (T, V)
        report.ngram_loss[n] = float(-np.log(np.maximum(grams[n][np.arange(len(targets)), targets], FLOOR)).mean())
    for step in steps:
        say(f"checkpoint at step {step}")
        model = ckpt.load(run, f"step:{step}").build_model()
        p = _model_distributions(model, history, first)
        div: dict[int, float] = {}
        js: dict[int, float] = {}
        for n in report.orders:
            div[n], js[n] = divergences(p, grams[n])
        report.checkpoints.append(
            {
                "step": step,
                "divergence": div,
                "js": js,
                "closest_order": min(report.orders, key=lambda n: div[n]),
                "val_loss": float(-np.log(np.maximum(p[np.arange(len(targets)), targets], FLOOR)).mean()),
            }
        )
    return report


def plot(rep: DynamicsReport, path, title: str) -> None:
    from charnn.plots import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 4.6), dpi=110)
    steps = [c["step"] for c in rep.checkpoints]
    cmap = plt.get_cmap("viridis")
    for k, n in enumerate(rep.orders):
        ax.plot(
            steps,
            [c["divergence"][n] for c in rep.checkpoints],
            marker="o",
            ms=3,
            color=cmap(k / max(1, len(rep.orders) - 1)),
            label=f"{n}-gram",
        )
    ax.set_xscale("log")
    ax.set_xlabel("training step (kept checkpoints)")
    ax.set_ylabel("symmetric KL to the n-gram model (nats/char)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncol=3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Description": PNG_MARKER.decode()})
    plt.close(fig)


def write(rep: DynamicsReport, out, title: str):
    return write_outputs(out, "dynamics", PNG_MARKER, [CSV_MARKER], lambda f: plot(rep, f, title), rep.to_csv())


def parse_orders(text: str) -> list[int]:
    """--orders: "1-9", "2,4,6" or a mix ("1-3,5")."""
    out: set[int] = set()
    try:
        for part in text.split(","):
            if "-" in part:
                a, b = (int(x) for x in part.split("-"))
                out.update(range(a, b + 1))
            else:
                out.add(int(part))
    except ValueError:
        raise CharnnError(f"--orders {text!r}: use a range like 1-9 or a list like 1,2,4") from None
    if not out or min(out) < 1 or max(out) > 20:
        raise CharnnError(f"--orders {text!r}: orders run from 1 to 20")
    return sorted(out)


def fmt(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.3f}"
