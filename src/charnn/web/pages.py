"""Self-contained HTML pages: the cell heatmap and the training evolution. No server, no network.

Data goes into the page as JSON (activations quantised to one byte per value, base64), the
pictures as PNG data URIs, so one file can be mailed, opened offline or kept beside a paper.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from charnn.errors import CharnnError
from charnn.files import read_jsonl, refuse_foreign, write_atomic
from charnn.inspect.activations import NAMES, QUANTITIES, RANGES, record_all
from charnn.inspect.attention import rank_heads, read_attention, require_attention
from charnn.inspect.find import find_cells
from charnn.subject import Subject, display_chars
from charnn.vocab import TokenVocab

CELLS_MARKER = b'<meta name="generator" content="charnn cells page">'
ATTENTION_MARKER = b'<meta name="generator" content="charnn attention page">'
MAX_ATTENTION_BYTES = 40_000_000  # layers x heads x characters x block, one byte each
EVOLUTION_MARKER = b'<meta name="generator" content="charnn evolution page">'
TEACH_MARKER = b'<meta name="generator" content="charnn teach page">'
PNG_MARKER = b"charnn training curves"
MAX_PAGE_CHARS = 20_000  # beyond this a browser struggles with one span per character


def _json_for_script(obj) -> str:
    # Inside a <script> block '</script' would end it and '<!--' would change how the rest is
    # parsed; JSON may spell every '<' as \u003c, so none is left for the HTML parser to see.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def _fill(template: str, parts: dict[str, str]) -> str:
    """A page from templates/: every placeholder replaced in one pass over the template, so a
    value that contains a placeholder's name (a file called __DATA__.txt) is never substituted."""
    text = _template(template)
    parts = {"__COLOURS__": _template("colours.js"), **parts}
    return re.sub("|".join(map(re.escape, parts)), lambda m: parts[m.group(0)], text)


def _template(name: str) -> str:
    return resources.files("charnn.web").joinpath("templates", name).read_text(encoding="utf-8")


def serve_page() -> str:
    """The page `charnn serve` answers at / (it reads everything else from the API)."""
    return _fill("serve.html", {})


def _write(path: Path, text: str, marker: bytes) -> Path:
    path = Path(path)
    refuse_foreign(path, marker)
    if not path.parent.exists():
        raise CharnnError(f"the folder {path.parent} does not exist; create it or choose another --out")
    return write_atomic(path, text)


@torch.no_grad()
def cells_page_data(subject: Subject, jump: bool = True) -> dict:
    """Everything the heatmap page shows, for the whole (short) text of `subject`."""
    model = subject.model
    n = len(subject.ids)
    if n > MAX_PAGE_CHARS:
        raise CharnnError(f"{n:,} characters is too many for one page; use --chars {MAX_PAGE_CHARS} or fewer")
    cell = model.cfg.cell
    qs = QUANTITIES[cell]
    ch = record_all(model, subject.ids)  # one exact pass from the zero state
    acts = {}
    for q in qs:
        lo, hi = RANGES[q]
        v = ((ch.acts[q] - lo) / (hi - lo)).clamp(0, 1).mul(255).round().to(torch.uint8)  # (L, N, H)
        for layer in range(model.cfg.layers):
            acts[f"{layer}:{q}"] = base64.b64encode(v[layer].T.contiguous().numpy().tobytes()).decode()
    probs = ch.logp.exp()  # (N, V)
    top_p, top_i = probs.topk(min(5, probs.shape[1]), dim=1)
    table = display_chars(subject.vocab)
    top5 = [[[table[i], round(float(p), 4)] for i, p in zip(ri.tolist(), rp.tolist())] for ri, rp in zip(top_i, top_p)]
    chars = subject.chars
    nxt = torch.from_numpy(np.append(chars[1:], chars[-1]))
    pnext = probs.gather(1, nxt[:, None])[:, 0]
    order = ("c", "h") + tuple(q for q in qs if q not in ("c", "h")) if cell == "lstm" else qs
    quantities = [{"key": q, "name": NAMES[q], "lo": RANGES[q][0], "hi": RANGES[q][1]} for q in order]
    jumps = []
    if jump and not isinstance(subject.vocab, TokenVocab):  # features are per character
        for res in find_cells(subject, top=1):
            if res.top and abs(res.top[0].r) >= 0.3:
                t = res.top[0]
                jumps.append({"feature": res.name, "layer": t.layer, "cell": t.cell, "quantity": t.quantity, "r": t.r})
    c = subject.loaded.config.model
    units = "tokens" if isinstance(subject.vocab, TokenVocab) else "characters"
    title = f"charnn cells: {c.describe()} reading {n:,} {units} of {subject.what}"
    return {
        "title": title,
        "unit": "token" if isinstance(subject.vocab, TokenVocab) else "character",
        "text": [table[i] for i in chars.tolist()],
        "layers": c.layers,
        "hidden": c.units,
        "quantities": quantities,
        "acts": acts,
        "top5": top5,
        "pnext": [round(float(p), 4) for p in pnext.tolist()],
        "jump": jumps,
    }


def cells_page_html(subject: Subject) -> str:
    """The cells page as one self-contained HTML string (what write_cells_page writes)."""
    data = cells_page_data(subject)
    return _fill("cells.html", {"__TITLE__": html.escape(data["title"]), "__DATA__": _json_for_script(data)})


def write_cells_page(subject: Subject, out: str | Path) -> Path:
    return _write(Path(out), cells_page_html(subject), CELLS_MARKER)


# ---- a transformer's attention ------------------------------------------------------------


def attention_page_data(subject: Subject, top: int = 3) -> dict:
    """Everything the attention page shows: each head's weights (one byte each) while reading
    the text, how much context each character had, and the heads ranked by pattern."""
    require_attention(subject)
    c = subject.model.cfg
    n = len(subject.ids)
    size = c.layers * c.heads * n * c.block
    if size > MAX_ATTENTION_BYTES:
        most = MAX_ATTENTION_BYTES // (c.layers * c.heads * c.block)
        raise CharnnError(
            f"{n:,} characters of {c.layers * c.heads} heads over a block of {c.block} is too much for "
            f"one page; use --chars {most} or fewer"
        )
    a = read_attention(subject)
    q = np.clip(np.rint(a.att * 255), 0, 255).astype(np.uint8)
    ranking = [
        {
            "name": r.name,
            "about": r.about,
            "queries": r.queries,
            "top": [{"layer": s.layer, "head": s.head, "score": round(s.score, 4), "chance": round(s.chance, 4)} for s in r.top],
        }
        for r in rank_heads(a, top)
    ]
    title = f"charnn attention: {c.describe()} reading {n:,} characters of {subject.what}"
    return {
        "title": title,
        "text": list(subject.text),
        "layers": c.layers,
        "heads": c.heads,
        "block": c.block,
        "context": a.context.tolist(),
        "att": base64.b64encode(q.tobytes()).decode(),
        "ranking": ranking,
    }


def attention_page_html(subject: Subject, top: int = 3) -> tuple[str, dict]:
    """The attention page as one self-contained HTML string, and its data."""
    data = attention_page_data(subject, top)
    return _fill("attention.html", {"__TITLE__": html.escape(data["title"]), "__DATA__": _json_for_script(data)}), data


def write_attention_page(subject: Subject, out: str | Path, top: int = 3) -> tuple[Path, dict]:
    page, data = attention_page_html(subject, top)
    return _write(Path(out), page, ATTENTION_MARKER), data


# ---- training evolution -------------------------------------------------------------------


def loss_curves_png(metrics: list[dict], snapshots: list[int], path: Path | None = None) -> bytes:
    """Training and validation loss against step, with the snapshot steps marked; PNG bytes."""
    from charnn.plots import pyplot

    plt = pyplot()

    tr = [(m["step"], m["train_loss"]) for m in metrics if m.get("train_loss") is not None]
    va = [(m["step"], m["val_loss"]) for m in metrics if m.get("val_loss") is not None]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    if tr:
        ax.plot(*zip(*tr), lw=1, color="tab:blue", alpha=0.8, label="training loss")
    if va:
        ax.plot(*zip(*va), "o-", ms=3, color="tab:orange", label="validation loss")
    for s in snapshots:
        ax.axvline(s, color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per character)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("loss during training (grey lines: sample snapshots)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Description": PNG_MARKER.decode()})
    plt.close(fig)
    png = buf.getvalue()
    if path is not None:
        refuse_foreign(path, PNG_MARKER)
        path.write_bytes(png)
    return png


def _milestones(steps: list[int]) -> set[int]:
    """The steps the page shows first: the blog's 100, 300, 500, 700, 1200, 2000, then each
    doubling (4000, 8000, ...) or the nearest recorded step after it, and the last one."""
    if not steps:
        return set()
    targets = [100, 300, 500, 700, 1200, 2000]
    while targets[-1] < steps[-1]:
        targets.append(targets[-1] * 2)
    ordered = sorted(set(steps))
    keep = {next((s for s in ordered if s >= t), ordered[-1]) for t in targets}
    return keep | {ordered[-1]}


def _kept_line(k: dict | None) -> str:
    """The kept checkpoint's own numbers for a snapshot: its loss and its best cell per feature."""
    if not k:
        return ""
    cells = "; ".join(
        f"{html.escape(name)}: layer {layer} cell {cell} {q} (r = {r:+.2f})" for name, (layer, cell, q, r) in k["cells"].items()
    )
    return (
        f'<p class="kept" data-testid="kept"><b>kept checkpoint</b>: loss {k["loss"]:.3f} nats on '
        f"{k['chars']:,} characters; best cells: {cells or '-'}</p>"
    )


def write_evolution_page(
    run: str | Path, out: str | Path, kept: dict[int, dict] | None = None, dynamics_png: bytes | None = None
) -> Path:
    """The samples recorded during training beside the loss curves, as the blog's War and Peace section.

    kept: step -> {"loss": nats on the analysed text, "chars": how many, "cells": {feature: (layer,
    cell, quantity, r)}} for the kept checkpoints (computed by the caller: the pages never run the
    analyses themselves); dynamics_png: the `analyze dynamics` plot, shown under the curves."""
    kept = kept or {}
    run = Path(run)
    if not run.is_dir():
        raise CharnnError(f"{run} is not a run directory; give the folder that `charnn train --out` wrote")
    metrics = read_jsonl(run / "metrics.jsonl")
    samples = read_jsonl(run / "samples.jsonl")
    if not metrics and not samples:
        raise CharnnError(f"{run} has no metrics.jsonl or samples.jsonl; train a model into it first")
    out = Path(out)
    refuse_foreign(out, EVOLUTION_MARKER)
    png_path = out.with_name(out.stem + "-loss.png")
    png = loss_curves_png(metrics, [s["step"] for s in samples], png_path if out.parent.exists() else None)
    milestones = _milestones([s["step"] for s in samples])

    def section(s) -> str:
        val = s.get("val_loss")
        val_txt = f"{val:.3f} nats ({val / math.log(2):.2f} bpc)" if isinstance(val, (int, float)) else "-"
        tl = s.get("train_loss")
        tl_txt = f"{tl:.3f}" if isinstance(tl, (int, float)) and math.isfinite(tl) else "-"
        novel = (
            f" &middot; {100 * s['novel_20']:.0f}% of its 20-character pieces new"
            if isinstance(s.get("novel_20"), (int, float))
            else ""
        )
        return (
            f'<section class="snap" data-step="{s["step"]}"><h3>step {s["step"]} '
            f"<small>epoch {s.get('epoch', 0):.2f} &middot; train loss {tl_txt} &middot; "
            f"validation {val_txt} &middot; temperature {s.get('temperature', '')}{novel}</small></h3>"
            f"{_kept_line(kept.get(s['step']))}<pre>{html.escape(s.get('text', ''))}</pre></section>"
        )

    shown = "".join(section(s) for s in samples if s["step"] in milestones)
    rest = [s for s in samples if s["step"] not in milestones]
    if rest:
        shown += (
            f'<details data-testid="more"><summary>the other {len(rest)} samples (one per evaluation)</summary>'
            + "".join(section(s) for s in rest)
            + "</details>"
        )
    title = f"charnn training evolution: {run.resolve().name}"
    dyn = (
        ""
        if dynamics_png is None
        else '<h3>divergence from n-gram models, per kept checkpoint</h3><img alt="training dynamics" '
        f'data-testid="dynamics" src="data:image/png;base64,{base64.b64encode(dynamics_png).decode()}">'
    )
    page = _fill(
        "evolution.html",
        {
            "__TITLE__": html.escape(title),
            "__PNG__": base64.b64encode(png).decode(),
            "__DYNAMICS__": dyn,
            "__COUNT__": str(len(samples)),
            "__SAMPLES__": shown or "<p>No samples were recorded in this run.</p>",
        },
    )
    return _write(out, page, EVOLUTION_MARKER)


def write_teach_page(lesson, out: str | Path) -> Path:
    """`charnn teach hello --out`: the lesson as a page that trains the same network in the browser,
    one update at a time, for the word typed in (offline; lesson: a ``charnn.teach.Lesson``)."""
    data = {"word": lesson.word, "init": lesson.init, "lr": lesson.lr}
    page = _fill(
        "teach.html",
        {
            "__TITLE__": html.escape(f'charnn teach: a tiny RNN learns to spell "{lesson.word}"'),
            "__WORD__": html.escape(lesson.word, quote=True),
            "__HIDDEN__": str(len(lesson.init["b_h"])),
            "__LR__": f"{lesson.lr:g}",
            "__DATA__": _json_for_script(data),
        },
    )
    return _write(Path(out), page, TEACH_MARKER)
