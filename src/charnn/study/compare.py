"""Characters against byte-pair tokens, and recurrence against attention, fairly:
`charnn compare TEXT --units char,bpe:256,bpe:1024` and `--models lstm,gru,transformer`.

Every unit and model trains on the same text and split, for the same wall time (or steps), and,
as near as whole cells allow, with the same parameters (a bigger vocabulary costs embedding and
read-out weights, so a token model gets fewer cells). A recurrent model trains with the default
preset's settings (``--layers`` of them); a transformer with the ``gpt-muon`` preset's (2 layers,
6 heads, block 64, Muon, bf16 where the CPU has it, as the default preset), its width chosen to
meet the parameter budget. Each is scored on the
same test text (cut on characters, then tokenised) in bits per character: total nats / characters.
Also: training speed in characters per second, and the novelty of its samples. Windows count
units (32 tokens read more text than 32 characters): part of what tokens buy, and measured.
"""

from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from charnn.config import CELLS, PRESETS
from charnn.errors import CharnnError
from charnn.files import cached_result, read_jsonl, refuse_foreign, strict_json, write_atomic, write_outputs
from charnn.model import count_params, match_hidden
from charnn.study.grid import train_in_child

CELL = "lstm"
MAX_UNITS = 8  # runs in one comparison: units x models
# The preset a transformer trains with, charnn's best measured at 60 s (Muon, as the recurrent
# models' default preset has): its depth and heads, its width set by the budget.
GPT = "gpt-muon"
GPT_LAYERS, GPT_HEADS = PRESETS[GPT]["model"]["layers"], PRESETS[GPT]["model"]["heads"]


@dataclass(frozen=True)
class Unit:
    unit: str  # char or bpe
    size: int = 0  # tokens, for bpe

    @property
    def label(self) -> str:
        return f"bpe:{self.size}" if self.unit == "bpe" else self.unit

    @property
    def name(self) -> str:  # a folder name
        return self.label.replace(":", "-")


def parse_units(text: str) -> list[Unit]:
    """'char,bpe:256,bpe:1024' -> units; bpe needs its vocabulary size."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        m = re.fullmatch(r"bpe:(\d+)", part)
        if part == "char":
            out.append(Unit(part))
        elif m and 2 <= int(m[1]) <= 65536:
            out.append(Unit("bpe", int(m[1])))
        else:
            raise CharnnError(f"--units {text!r}: each unit is char or bpe:K with K from 2 to 65536 (e.g. char,bpe:256,bpe:1024)")
    if len(set(out)) != len(out) or not 1 <= len(out) <= MAX_UNITS:
        raise CharnnError(f"--units {text!r}: give 1 to {MAX_UNITS} different units")
    return out


def parse_models(text: str) -> list[str]:
    """'lstm,gru,transformer' -> the cells to compare."""
    out = [p.strip() for p in text.split(",")]
    if any(c not in CELLS for c in out) or len(set(out)) != len(out):
        raise CharnnError(f"--models {text!r}: give different models from {', '.join(CELLS)} (e.g. lstm,gru,transformer)")
    return out


@dataclass
class Settings:
    max_time: float = 0.0  # seconds per run
    max_steps: int = 0  # or steps per run
    params: int = 0  # parameters of every model (0: the default preset's model reading characters)
    layers: int = 1
    embed: int = 64
    split: tuple[float, float, float] = (0.9, 0.05, 0.05)
    seed: int = 1337
    samples: int = 4  # samples per model for the novelty measures ...
    sample_chars: int = 2000  # ... of this many characters each
    temperature: float = 1.0  # the model's own distribution
    extra: dict = field(default_factory=dict)  # more TrainConfig fields (tests)

    def validate(self) -> "Settings":
        if not self.max_time and not self.max_steps:
            raise CharnnError("give every unit the same budget: --max-time PER_RUN (e.g. 5m) or --max-steps PER_RUN")
        if not 1 <= self.layers <= 8:
            raise CharnnError(f"--layers must be from 1 to 8, got {self.layers}")
        if self.params and self.params < 100:
            raise CharnnError(f"--params {self.params}: below 100 parameters there is no model")
        return self


@dataclass
class Entry:
    unit: Unit
    vocab: int
    hidden: int  # a recurrent model's cells, a transformer's width
    params: int
    cell: str = CELL

    @property
    def name(self) -> str:  # its run's folder
        return self.unit.name if self.cell == CELL else f"{self.cell}-{self.unit.name}"

    @property
    def label(self) -> str:
        return self.unit.label if self.cell == CELL else f"{self.cell} {self.unit.label}"


def plan(text: str, units: list[Unit], settings: Settings, progress=None, models=(CELL,)) -> list[Entry]:
    """Each unit's vocabulary (tokenising the text once: cached) and, for each model, the hidden
    size (a transformer's width) that gives it the parameter budget."""
    if not 1 <= len(units) * len(models) <= MAX_UNITS:
        raise CharnnError(
            f"{len(units)} units x {len(models)} models is {len(units) * len(models)} runs; compare at most {MAX_UNITS} at once"
        )
    from charnn.config import RunConfig
    from charnn.data import prepare

    vocabs = {}
    for u in units:
        if progress and u.unit == "bpe":
            progress(f"learning {u.size} tokens from the training split ...")
        vocabs[u] = len(prepare(text, unit=u.unit, seed=settings.seed, split=settings.split, vocab_size=u.size).vocab)
    budget = settings.params
    if not budget:
        chars = vocabs.get(Unit("char")) or len(prepare(text, seed=settings.seed).vocab)
        budget = count_params(CELL, settings.layers, RunConfig().model.hidden, chars, settings.embed)
    out = []
    for cell in models:
        for u in units:
            layers = GPT_LAYERS if cell == "transformer" else settings.layers
            h = match_hidden(cell, layers, budget, vocabs[u], settings.embed, GPT_HEADS)
            out.append(Entry(u, vocabs[u], h, count_params(cell, layers, h, vocabs[u], settings.embed), cell))
    return out


def run_config(entry: Entry, text: str, settings: Settings, threads: int):
    from charnn.config import RunConfig, apply_preset

    cfg = RunConfig()
    apply_preset(cfg, GPT if entry.cell == "transformer" else "default")
    a, b, c = settings.split
    cfg.data.text, cfg.data.split, cfg.data.unit = text, (a, b, c), entry.unit.unit
    cfg.data.bpe_vocab = entry.unit.size
    m = cfg.model
    if entry.cell == "transformer":
        m.embed = m.hidden = entry.hidden
    else:
        m.cell, m.layers, m.hidden, m.embed = entry.cell, settings.layers, entry.hidden, settings.embed
    for k, v in {
        "max_time": settings.max_time,
        "max_steps": settings.max_steps,
        "threads": threads,
        "seed": settings.seed,
        **settings.extra,
    }.items():
        setattr(cfg.train, k, v)
    return cfg.complete().validate()


def measure(run: Path, settings: Settings) -> dict:
    """Score a trained run: test bits per character, training speed in characters per second,
    and the novelty of its samples."""
    import numpy as np

    from charnn import checkpoint as ckpt
    from charnn.evaluate import model_text, score_text
    from charnn.sample import sample_text
    from charnn.samplestats import evaluate_samples

    loaded = ckpt.load(run, "best")
    model = loaded.build_model()
    vocab = loaded.vocab
    test = score_text(model, vocab, model_text(loaded, split="test").ids)
    train_ids = model_text(loaded, split="train").ids
    per_unit = float(vocab.char_counts()[np.asarray(train_ids, dtype=np.int64)].mean())  # characters per unit
    rates = [r["chars_per_s"] for r in read_jsonl(run / "metrics.jsonl") if "chars_per_s" in r]  # units per second
    last = ckpt.load(run, "last").meta
    length = math.ceil(settings.sample_chars / per_unit * 1.25) + 8
    samples = [
        s[: settings.sample_chars]
        for s in sample_text(model, vocab, length=length, num=settings.samples, seed=0, temperature=settings.temperature)
    ]
    train_text = vocab.decode(train_ids)
    heldout = vocab.decode(model_text(loaded, split="val").ids)
    st = evaluate_samples(samples, train_text, heldout, lengths=(10, 20))
    return {
        "test_loss": test.loss,
        "test_bpc": test.bpc,
        "test_chars": test.chars,
        "test_units": test.tokens if test.tokens is not None else test.chars,
        "chars_per_unit": per_unit,
        "steps": last.get("step"),
        "chars_per_s": (sum(rates) / len(rates)) * per_unit if rates else float("nan"),
        "novel_10": st.novelty.get(10, float("nan")),
        "novel_20": st.novelty.get(20, float("nan")),
        "longest_copy": st.longest_copy,
        "sample": samples[0][:300] if samples else "",
    }


def _train_and_measure(entry: Entry, text: str, out: Path, settings: Settings, threads: int) -> dict:
    """One unit: train (or finish) its run, then measure it; in a child process, cached in
    RUN/result.json so a comparison that was stopped resumes where it was."""
    run = out / entry.name
    result_file = run / "result.json"
    cached = cached_result(result_file, entry.name, NUMBERS)
    if cached is not None:
        return cached
    cfg = run_config(entry, text, settings, threads)
    train_in_child(run, lambda: run_config(entry, text, settings, threads), f"compare run {entry.label}")
    res = {
        "unit": entry.unit.label,
        "model": cfg.model.describe(),
        "cell": entry.cell,
        "vocab": entry.vocab,
        "hidden": entry.hidden,
        "params": entry.params,
        "layers": cfg.model.layers,
        "run": entry.name,
        **measure(run, settings),
    }
    write_atomic(result_file, json.dumps(res))
    return res


def compare(text: str, out: Path, entries: list[Entry], settings: Settings, jobs: int = 1, progress=None) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(
        out / "settings.json", json.dumps({"text": text, **asdict(settings), "runs": [e.label for e in entries]}, indent=1)
    )
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    results = []
    # spawn: a fresh interpreter per run (forking a process that holds torch's threads is unsafe)
    with ProcessPoolExecutor(max_workers=max(jobs, 1), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_train_and_measure, e, text, out, settings, threads) for e in entries]
        for fut in futures:
            results.append(fut.result())
            if progress:
                progress(results[-1])
    return results


COLUMNS = [
    ("unit", "unit", "{}"),
    ("model", "model", "{}"),
    ("vocab", "vocabulary", "{:,}"),
    ("params", "parameters", "{:,}"),
    ("steps", "steps", "{:,}"),
    ("test_bpc", "test bits/char", "{:.4f}"),
    ("test_loss", "test nats/unit", "{:.4f}"),
    ("chars_per_unit", "chars/unit", "{:.2f}"),
    ("chars_per_s", "training chars/s", "{:,.0f}"),
    ("novel_20", "novel 20-char spans", "{:.1%}"),
    ("longest_copy", "longest copy", "{}"),
]


NUMBERS = (
    "vocab",
    "params",
    "steps",
    "test_bpc",
    "test_loss",
    "chars_per_unit",
    "chars_per_s",
    "novel_20",
    "longest_copy",
    "hidden",
)  # a cached result.json missing any of these, or holding one that is not a number, is measured again
CSV_HEADER = [k for k, _, _ in COLUMNS] + ["test_chars", "test_units", "novel_10", "run", "cell", "hidden"]
PNG_MARKER = b"charnn compare"
MD_MARKER, JSON_MARKER = b"| unit |", b'"results"'


def check_outputs(out: Path) -> None:
    """Refuse, before anything trains, to write over files in `out` that charnn did not write."""
    refuse_foreign(out / "compare.md", MD_MARKER)
    refuse_foreign(out / "compare.json", JSON_MARKER)
    refuse_foreign(out / "compare.png", PNG_MARKER)
    refuse_foreign(out / "compare.csv", ",".join(CSV_HEADER).encode())


def write(results: list[dict], out: Path, text: str, title: str) -> str:
    """compare.md, .json, .png and .csv in `out`, each written whole; -> the markdown table."""
    md, csv_text = table(results)
    write_outputs(out, "compare", PNG_MARKER, CSV_HEADER, lambda f: plot(results, f, title), csv_text)
    write_atomic(out / "compare.md", md)
    write_atomic(out / "compare.json", strict_json({"text": text, "results": results}, indent=1))
    return md


def table(results: list[dict]) -> tuple[str, str]:
    """(markdown, csv), one row per unit."""
    md = io.StringIO()
    md.write("| " + " | ".join(h for _, h, _ in COLUMNS) + " |\n")
    md.write("|" + "---|" * len(COLUMNS) + "\n")
    for r in results:
        md.write("| " + " | ".join(f.format(r[k]) for k, _, f in COLUMNS) + " |\n")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for r in results:
        w.writerow(
            [r[k] for k, _, _ in COLUMNS] + [r["test_chars"], r["test_units"], r["novel_10"], r["run"], r["cell"], r["hidden"]]
        )
    return md.getvalue(), buf.getvalue()


def plot(results: list[dict], path, title: str) -> None:
    """Test bits per character, training speed and sample novelty, a bar per unit."""
    from charnn.plots import pyplot

    plt = pyplot()

    labels = [r["unit"] if r["cell"] == CELL else f"{r['cell']}\n{r['unit']}" for r in results]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    for ax, key, name in zip(
        axes,
        ("test_bpc", "chars_per_s", "novel_20"),
        ("test bits per character (lower is better)", "training characters per second", "novel 20-character spans in samples"),
    ):
        vals = [r[key] for r in results]
        ax.bar(
            labels,
            vals,
            color=[
                ("tab:blue" if r["unit"] == "char" else "tab:orange")
                if r["cell"] == CELL
                else "tab:green"
                if r["cell"] == "transformer"
                else "tab:purple"
                for r in results
            ],
        )
        ax.set_title(name, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        if key == "test_bpc":
            ax.set_ylim(min(vals) * 0.9, max(vals) * 1.03)
        for x, v in enumerate(vals):
            ax.text(
                x,
                v,
                f"{v:.3f}" if key == "test_bpc" else f"{v:,.0f}" if key == "chars_per_s" else f"{v:.0%}",
                ha="center",
                va="bottom",
                fontsize=8,
            )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110, metadata={"Description": PNG_MARKER.decode()})
    plt.close(fig)
