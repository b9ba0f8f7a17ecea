"""Gate saturation (paper, section 4.2): how often each cell's gates are nearly shut or open.

A gate value below 0.1 is left-saturated, above 0.9 right-saturated. The paper found forget
gates that are right-saturated most of the time (cells that remember for long) and, in the
first layer, gates that are rarely saturated at all. One point per cell, one panel per layer.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from charnn.errors import CharnnError
from charnn.files import write_outputs
from charnn.inspect.activations import GATES, NAMES, record, streams_for
from charnn.subject import Subject

LOW, HIGH = 0.1, 0.9
CSV_HEADER = ["layer", "gate", "cell", "left_saturated", "right_saturated"]
PNG_MARKER = b"charnn gate saturation"


@dataclass
class Saturation:
    gates: tuple[str, ...]
    left: dict[str, np.ndarray]  # gate -> (L, H) fraction of characters with value < LOW
    right: dict[str, np.ndarray]  # gate -> (L, H) fraction with value > HIGH
    chars: int


@torch.no_grad()
def gate_saturation(subject: Subject, streams: int = 16) -> Saturation:
    cell = subject.model.cfg.cell
    gates = GATES[cell]
    if not gates:
        raise CharnnError(f"a {'plain RNN' if cell == 'rnn' else cell} has no gates; gate saturation needs an lstm or gru model")
    L, H = subject.model.cfg.layers, subject.model.cfg.hidden
    left = {g: torch.zeros(L, H, dtype=torch.float64) for g in gates}
    right = {g: torch.zeros(L, H, dtype=torch.float64) for g in gates}
    n = 0
    streams = streams_for(len(subject.ids), streams)
    for ch in record(subject.model, subject.ids, gates, streams=streams, chunk=1024):
        for g in gates:
            v = ch.acts[g]  # (L, N, H)
            left[g] += (v < LOW).sum(1)
            right[g] += (v > HIGH).sum(1)
        n += len(ch.positions)
    return Saturation(gates, {g: (v / n).numpy() for g, v in left.items()}, {g: (v / n).numpy() for g, v in right.items()}, n)


def to_csv(sat: Saturation) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for g in sat.gates:
        L, H = sat.left[g].shape
        for layer in range(L):
            for c in range(H):
                w.writerow([layer, g, c, f"{sat.left[g][layer, c]:.6f}", f"{sat.right[g][layer, c]:.6f}"])
    return buf.getvalue()


def plot(sat: Saturation, path: Path, title: str = "") -> None:
    from charnn.plots import pyplot

    plt = pyplot()

    L = next(iter(sat.left.values())).shape[0]
    colors = {"i": "tab:blue", "f": "tab:green", "o": "tab:red", "r": "tab:purple", "z": "tab:orange"}
    fig, axes = plt.subplots(1, L, figsize=(4 * L, 4.2), squeeze=False)
    for layer, ax in enumerate(axes[0]):
        ax.plot([0, 1], [1, 0], color="0.8", lw=1, zorder=0)  # the points cannot pass this line
        for g in sat.gates:
            ax.scatter(
                sat.left[g][layer], sat.right[g][layer], s=10, alpha=0.6, color=colors[g], label=NAMES[g], edgecolors="none"
            )
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_title(f"layer {layer}")
        ax.set_xlabel(f"fraction left-saturated (< {LOW})")
        if layer == 0:
            ax.set_ylabel(f"fraction right-saturated (> {HIGH})")
        ax.legend(loc="upper right", fontsize=8, markerscale=1.5)
    fig.suptitle(title or f"gate saturation over {sat.chars:,} characters")
    fig.tight_layout(rect=(0, 0, 1, 0.95))  # leave room for the title
    fig.savefig(path, dpi=110, metadata={"Description": PNG_MARKER.decode()})
    plt.close(fig)


def write(sat: Saturation, out: Path, title: str = "") -> tuple[Path, Path]:
    """saturation.png and saturation.csv in the folder `out` (created if needed)."""
    return write_outputs(out, "saturation", PNG_MARKER, CSV_HEADER, lambda p: plot(sat, p, title), to_csv(sat))
