"""The paper's Table 1: RNN, LSTM and GRU of 1-3 layers at matched parameter budgets, and a
transformer row beside them (issue #35: attention at the paper's parameter counts).

For each cell type and depth the hidden size is chosen so that the model has the budget's
number of parameters (the paper's budgets are the sizes of a one-layer LSTM with 64, 128, 256
and 512 cells: about 50K, 130K, 400K and 1.3M). Each model trains in its own run directory
with the same budget, then is scored on the test split. A finished run is not trained again, so
a crashed grid resumes where it stopped; `jobs` > 1 trains several at once. Each run trains
and is scored through the library (``charnn.trainer.train``, ``charnn.evaluate``) in a process of
its own (isolation, and its share of the CPU threads); its messages go to ``RUN/train.log``.

A transformer of the grid is ``layers`` blocks, STUDY_HEADS heads wide enough for the budget,
reading random windows of STUDY_BLOCK characters (its context; a recurrent model's windows are
PROTOCOL's 32 with the state carried across them); the rest of PROTOCOL (batch, warmup, AdamW,
cosine, the grid's learning rate) is the same.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from charnn.errors import CharnnError
from charnn.files import cached_result, write_atomic
from charnn.model import STUDY_BLOCK, STUDY_HEADS, count_params, match_hidden

CELLS = ("rnn", "lstm", "gru", "transformer")  # the grid's columns, in this order

# Every grid run trains with these settings whatever the default preset becomes, so that a grid
# run again later (or resumed) is the same protocol: 32 streams of 32-character windows, 50
# warmup steps, then AdamW with cosine decay, in fp32 (the default preset when the study was first
# run; the preset has trained in bf16 where the CPU has it since 2026-12-06, after the committed
# report, and a grid resumed across that change would have mixed the two).
PROTOCOL = {"seq_len": 32, "batch_size": 32, "warmup_steps": 50, "optimizer": "adamw", "schedule": "cosine", "precision": "fp32"}


@dataclass
class Settings:
    """What every run of a grid shares (besides PROTOCOL)."""

    embed: int = 64
    split: tuple[float, float, float] = (0.9, 0.05, 0.05)
    dropout: float = 0.0
    lr: float = 8e-3
    max_time: float = 0.0
    max_steps: int = 0
    extra: dict = field(default_factory=dict)  # more TrainConfig fields (tests)

    def validate(self) -> "Settings":
        if not self.max_time and not self.max_steps:
            raise CharnnError("give every run the same budget: --max-time PER_RUN (e.g. 5m) or --max-steps PER_RUN")
        if not self.lr > 0:
            raise CharnnError(f"--lr must be positive, got {self.lr:g}")
        if not 0 <= self.dropout < 1:
            raise CharnnError(f"--dropout must be in [0, 1), got {self.dropout:g}")
        if self.embed < 1:
            raise CharnnError(f"--embed must be a positive integer, got {self.embed}")
        return self


def parse_cells(text: str) -> list[str]:
    cells = [c.strip() for c in text.split(",") if c.strip()]
    if not cells or any(c not in CELLS for c in cells):
        raise CharnnError(f"--cells {text!r}: choose from {', '.join(CELLS)}")
    return cells


def parse_layers(text: str) -> list[int]:
    try:
        layers = [int(x) for x in text.split(",")]
    except ValueError:
        raise CharnnError(f"--layers {text!r}: expected depths like 1,2,3") from None
    if not layers or any(not 1 <= n <= 8 for n in layers):
        raise CharnnError(f"--layers {text!r}: depths must be between 1 and 8")
    return layers


def parse_budgets(text: str) -> list[int]:
    """'50k,130k,400k,1.3m' -> [50000, 130000, 400000, 1300000]."""
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", part)
        if not m:
            raise CharnnError(f"--params {text!r}: expected sizes like 50k,130k,400k,1.3m")
        out.append(int(round(float(m[1]) * {"": 1, "k": 1e3, "m": 1e6}[m[2].lower()])))
    if any(b < 100 for b in out):
        raise CharnnError(f"--params {text!r}: budgets below 100 parameters make no model")
    return out


def budget_name(b: int) -> str:
    return f"{b / 1e6:g}M" if b >= 1_000_000 else f"{b / 1e3:g}K"


@dataclass
class Cell:
    cell: str
    layers: int
    budget: int
    hidden: int
    params: int

    @property
    def name(self) -> str:
        return f"{self.cell}-{self.layers}x{self.hidden}-{budget_name(self.budget)}"


def plan(cells, layers, budgets, vocab: int, embed: int) -> list[Cell]:
    out = []
    for b in budgets:
        for c in cells:
            for n in layers:
                h = match_hidden(c, n, b, vocab, embed)
                out.append(Cell(c, n, b, h, count_params(c, n, h, vocab, embed)))
    return out


def run_config(entry: "Cell", text: str, settings: Settings, threads: int):
    """The RunConfig of one grid run: the default preset, the grid's protocol and the entry's shape."""
    from charnn.config import RunConfig, apply_preset

    cfg = RunConfig()
    apply_preset(cfg, "default")
    a, b, c = settings.split
    cfg.data.text, cfg.data.split = text, (a, b, c)
    m = cfg.model
    m.cell, m.layers, m.hidden, m.embed, m.dropout = entry.cell, entry.layers, entry.hidden, settings.embed, settings.dropout
    protocol = dict(PROTOCOL)
    if entry.cell == "transformer":
        m.embed, m.heads, m.block = entry.hidden, STUDY_HEADS, STUDY_BLOCK
        protocol.update(seq_len=STUDY_BLOCK, windows="random")
    for k, v in {
        **protocol,
        "lr": settings.lr,
        "max_time": settings.max_time,
        "max_steps": settings.max_steps,
        "threads": threads,
        **settings.extra,
    }.items():
        setattr(cfg.train, k, v)
    return cfg


def train_in_child(run: Path, make_config, name: str) -> None:
    """Train `run` with make_config() (or finish it, when a crash or an interruption stopped it
    before its budget); a finished run is left alone. For a child process: its messages go to
    RUN/train.log, a failure comes back as one CharnnError naming the run."""
    run.mkdir(parents=True, exist_ok=True)
    before = sys.stderr
    with open(run / "train.log", "a", encoding="utf-8") as log:
        sys.stderr = log  # warnings and progress lines of this run
        try:
            _train_or_finish(run, make_config, name)
        finally:
            sys.stderr = before


def _train_or_finish(run: Path, make_config, name: str) -> None:
    from charnn import checkpoint as ckpt
    from charnn.trainer import train

    if (run / ckpt.LAST).is_file() and ckpt.load(run, "last").meta.get("stopped_by") in (
        "max-steps",
        "max-time",
        "max-epochs",
        "patience",
    ):
        return
    try:
        if (run / ckpt.LAST).is_file():  # a crashed or interrupted run: finish its budget
            train(None, run, resume=True, progress=False)
        else:
            train(make_config(), run, progress=False)
    except CharnnError as e:
        raise CharnnError(f"{name} failed: {e}") from None


RESULT_NUMBERS = ("layers", "budget", "hidden", "params", "test_loss", "test_bpc")  # what a whole result.json holds


def cached_of(out: Path, entry: "Cell") -> dict | None:
    """A run's result as the grid cached it (RUN/result.json), or None: not measured yet, or a
    damaged file, which is measured again."""
    return cached_result(out / entry.name / "result.json", entry.name, RESULT_NUMBERS)


def _train_one(entry: "Cell", text: str, out: Path, settings: Settings, threads: int) -> dict:
    """Train (or finish) one run and score its test split; returns its result (in a child process)."""
    from charnn import checkpoint as ckpt
    from charnn.evaluate import evaluate, model_text

    run = out / entry.name
    result_file = run / "result.json"
    cached = cached_of(out, entry)
    if cached is not None:
        return cached
    train_in_child(run, lambda: run_config(entry, text, settings, threads), f"grid run {entry.name}")
    loaded = ckpt.load(run, "best")
    s = evaluate(loaded.build_model(), model_text(loaded, split="test").ids)
    res = {
        "cell": entry.cell,
        "layers": entry.layers,
        "budget": entry.budget,
        "hidden": entry.hidden,
        "params": entry.params,
        "test_loss": s.loss,
        "test_bpc": s.bpc,
        "run": entry.name,
    }
    write_atomic(result_file, json.dumps(res))
    return res


def run_grid(text: str, out: Path, entries: list["Cell"], settings: Settings, jobs: int = 1, progress=None) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    results: list[dict] = []
    # spawn: a fresh interpreter per worker (forking a process that holds torch's threads is unsafe)
    with ProcessPoolExecutor(max_workers=max(jobs, 1), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_train_one, e, text, out, settings, threads): e for e in entries}
        for fut in futures:
            res = fut.result()
            results.append(res)
            if progress:
                progress(res)
    return results


def table(results: list[dict]) -> tuple[str, str]:
    """(markdown, csv) in the paper's layout: one row per budget and depth, one column per cell."""
    cells = [c for c in CELLS if any(r["cell"] == c for r in results)]
    keyed = {(r["budget"], r["layers"], r["cell"]): r for r in results}
    rows = sorted({(r["budget"], r["layers"]) for r in results})
    md = io.StringIO()
    md.write("| params | layers | " + " | ".join(f"{c.upper()} test loss (hidden, params)" for c in cells) + " |\n")
    md.write("|---|---|" + "---|" * len(cells) + "\n")
    for b, n in rows:
        cols = []
        for c in cells:
            r = keyed.get((b, n, c))
            cols.append(f"{r['test_loss']:.4f} ({r['hidden']}, {r['params']:,})" if r else "-")
        md.write(f"| {budget_name(b)} | {n} | " + " | ".join(cols) + " |\n")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["budget", "layers", "cell", "hidden", "params", "test_loss", "test_bpc", "run"])
    for r in sorted(results, key=lambda r: (r["budget"], r["layers"], r["cell"])):
        w.writerow(
            [
                r["budget"],
                r["layers"],
                r["cell"],
                r["hidden"],
                r["params"],
                f"{r['test_loss']:.6f}",
                f"{r['test_bpc']:.6f}",
                r["run"],
            ]
        )
    return md.getvalue(), buf.getvalue()


def plot(results: list[dict], path: Path) -> None:
    """Test loss against parameters, a line per cell and depth; with a single budget (where the
    models differ in size by about 1%, which a log axis would spread into noise) a bar chart
    grouped by depth, a bar per cell."""
    from charnn.plots import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4))
    cells = [c for c in CELLS if any(r["cell"] == c for r in results)]
    depths = sorted({r["layers"] for r in results})
    budgets = sorted({r["budget"] for r in results})
    if len(budgets) == 1:
        width = 0.8 / max(len(cells), 1)
        for k, c in enumerate(cells):
            xs = [d + (k - (len(cells) - 1) / 2) * width for d in depths]
            ys = [next((r["test_loss"] for r in results if r["cell"] == c and r["layers"] == d), float("nan")) for d in depths]
            ax.bar(xs, ys, width, label=c.upper())
        ax.set_xticks(depths, [f"{d} layer{'s' * (d > 1)}" for d in depths])
        ax.set_ylim(min(r["test_loss"] for r in results) * 0.95, max(r["test_loss"] for r in results) * 1.02)
        ax.set_title(f"test loss at {budget_name(budgets[0])} parameters")
    else:
        styles = {"rnn": "o-", "lstm": "s-", "gru": "^-", "transformer": "D-"}
        for c in cells:
            for n in depths:
                pts = sorted((r["params"], r["test_loss"]) for r in results if r["cell"] == c and r["layers"] == n)
                if pts:
                    ax.plot(*zip(*pts), styles[c], alpha=0.4 + 0.2 * n, label=f"{c.upper()} {n} layer{'s' * (n > 1)}")
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_title("test loss at matched parameter budgets")
    ax.set_ylabel("test loss (nats per character)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
