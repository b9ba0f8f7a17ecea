"""`charnn inspect ...`: the command line of charnn.inspect (parse, call one function, print)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from charnn.cli import args as flags
from charnn.errors import CharnnError
from charnn.files import strict_json


def add_parsers(sub) -> None:
    _add_inspect(sub)
    _add_analyze(sub)


def _common(p, chars_default: int, chars_help: str) -> None:
    """The run, the text it reads and how much of it: what every inspect view takes."""
    p.add_argument("run", metavar="RUN_DIR", help="a run directory or a .safetensors checkpoint")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", metavar="FILE", default=None, help="read this text file")
    src.add_argument(
        "--split", choices=["train", "val", "test"], default=None, help="read a split of the run's own corpus (default val)"
    )
    p.add_argument("--chars", type=flags.count, default=chars_default, help=chars_help)
    p.add_argument("--checkpoint", type=flags.which, default="best", metavar="WHICH", help=flags.WHICH_HELP)


def _add_inspect(sub) -> None:
    ins = sub.add_parser(
        "inspect", help="look inside a trained model: cell heatmaps, cell search, saturation, ablation, training evolution"
    )
    ins.set_defaults(func=_say_what("inspect", "cells, find, saturation, ablate, evolution or attention"))
    isub = ins.add_subparsers(dest="inspect_command", metavar="WHAT", parser_class=type(ins))
    c = isub.add_parser("cells", help="an HTML page: the text coloured by any cell, with top-5 guesses on hover")
    _common(c, 2000, "characters to show (default 2000, at most 20000)")
    c.add_argument("--out", required=True, metavar="PAGE.html", help="the page to write")

    c.set_defaults(func=cmd_cells)

    f = isub.add_parser("find", help="rank cells by correlation with quotes, brackets, line position, ...")
    _common(f, 200_000, "characters to read (default 200000; 0: all)")
    f.add_argument(
        "--feature",
        action="append",
        default=[],
        metavar="NAME=REGEX",
        help="add a feature: the characters inside each match are on (repeatable)",
    )
    f.add_argument("--top", type=flags.count, default=5, help="cells to list per feature (default 5)")
    f.add_argument("--json", action="store_true", help="print one JSON object")

    f.set_defaults(func=cmd_find)

    s = isub.add_parser("saturation", help="how often each gate is shut (<0.1) or open (>0.9): PNG and CSV")
    _common(s, 200_000, "characters to read (default 200000; 0: all)")
    s.add_argument("--out", required=True, metavar="DIR", help="folder for saturation.png and saturation.csv")

    s.set_defaults(func=cmd_saturation)

    a = isub.add_parser("ablate", help="silence cells and report the change in loss where features are on / off")
    _common(a, 100_000, "characters to read (default 100000; 0: all)")
    a.add_argument(
        "--cells",
        metavar="LAYER:INDEX[,...]",
        help="cells to silence, e.g. 0:12,1:40 (a transformer's MLP neurons, 4 x width per layer)",
    )
    a.add_argument("--heads", metavar="LAYER:HEAD[,...]", help="a transformer's attention heads to silence, e.g. 0:1,2:3")
    a.add_argument(
        "--mode",
        default="zero",
        metavar="{zero,mean,value:V}",
        help="hold the cells at zero, at their mean over the text, or at V as charnn sample --clamp does "
        "(an LSTM's tanh(c), a GRU's or RNN's h, a transformer's MLP neuron) (default zero)",
    )
    a.add_argument("--feature", action="append", default=[], metavar="NAME=REGEX", help="add a feature to report on (repeatable)")
    a.add_argument("--json", action="store_true", help="print one JSON object")

    a.set_defaults(func=cmd_ablate)
    _add_inspect_pages(isub)


def _add_inspect_pages(isub) -> None:
    e = isub.add_parser("evolution", help="an HTML page: samples recorded during training beside the loss curves")
    e.add_argument("run", metavar="RUN_DIR", help="a run directory")
    e.add_argument("--out", required=True, metavar="PAGE.html", help="the page to write (the plot goes beside it)")
    e.add_argument(
        "--analyses",
        action="store_true",
        help="also show, for each kept checkpoint, its loss and best cell per feature, and the "
        "dynamics plot (reads --chars of the validation split with every kept checkpoint)",
    )
    e.add_argument("--chars", type=flags.count, default=5000, help="characters read by --analyses (default 5000)")
    e.set_defaults(func=cmd_evolution)

    t = isub.add_parser(
        "attention",
        help="a transformer: an HTML page of every head's attention, and its heads "
        "ranked by what they attend to (previous character, line start, "
        "matching opener, copying)",
    )
    _common(t, 1000, "characters to show (default 1000)")
    t.add_argument("--out", required=True, metavar="PAGE.html", help="the page to write")
    t.add_argument("--top", type=flags.count, default=3, help="heads to list per pattern (default 3)")
    t.add_argument("--json", action="store_true", help="print the ranking as one JSON object")
    t.set_defaults(func=cmd_attention)


def _add_analyze(sub) -> None:
    an = sub.add_parser("analyze", help="the paper's analyses of a trained model: error sources, long-range dependencies")
    an.set_defaults(func=_say_what("analyze", "errors, braces, dynamics, context or emergence"))
    asub = an.add_subparsers(dest="analyze_command", metavar="WHAT", parser_class=type(an))
    b = asub.add_parser("braces", help="loss on '}' by distance to its '{', for the RNN and an n-gram model")
    b.add_argument("run", metavar="RUN_DIR", help="a run trained on code")
    b.add_argument("--out", required=True, metavar="DIR", help="folder for braces.png and braces.csv")
    b.add_argument("--order", type=flags.count, default=20, help="n-gram order to compare with (default 20)")
    b.add_argument(
        "--ngram",
        metavar="FILE",
        default=None,
        help="compare with this saved n-gram model (charnn ngram --save) instead of training one",
    )
    b.add_argument("--split", choices=["val", "test"], default="test", help="the split to score (default test)")
    b.add_argument("--chars", type=flags.count, default=0, help="characters of the split to read (0: all)")
    b.add_argument("--checkpoint", type=flags.which, default="best", metavar="WHICH", help=flags.WHICH_HELP)
    b.set_defaults(func=cmd_braces)

    e = asub.add_parser("errors", help="where the errors come from: the paper's oracles, peeled in order")
    e.add_argument("run", metavar="RUN_DIR")
    e.add_argument("--out", required=True, metavar="DIR", help="folder for errors.png and errors.csv")
    other = e.add_mutually_exclusive_group()
    other.add_argument(
        "--compare", metavar="RUN_DIR2", default=None, help="another run on the same text: which of these errors it gets right"
    )
    other.add_argument(
        "--baseline",
        default=None,
        metavar="NGRAM",
        help="an n-gram model to compare with: a file from `charnn ngram --save`, or an order "
        "(trained here on the run's training split)",
    )
    e.add_argument("--split", choices=["val", "test"], default="test", help="the split to score (default test)")
    e.add_argument("--chars", type=flags.count, default=100_000, help="characters to read (default 100000; 0: all)")
    e.add_argument("--checkpoint", type=flags.which, default="best", metavar="WHICH", help=flags.WHICH_HELP)
    e.set_defaults(func=cmd_errors)
    _add_analyze_training(asub)


def _add_analyze_training(asub) -> None:
    d = asub.add_parser(
        "dynamics",
        help="each kept checkpoint against n-gram models of each order: which it "
        "predicts like, as training goes on (the paper's training dynamics)",
    )
    d.add_argument("run", metavar="RUN_DIR", help="a run that kept checkpoints (--keep-checkpoints, on by default)")
    d.add_argument("--out", required=True, metavar="DIR", help="folder for dynamics.png and dynamics.csv")
    d.add_argument("--orders", default="1-9", help="n-gram orders to compare with (default 1-9; e.g. 1,2,4,8)")
    d.add_argument("--split", choices=["train", "val", "test"], default="val", help="the text to read (default val)")
    d.add_argument(
        "--chars", type=flags.count, default=20_000, help="characters of the split to compare on (default 20000; 0: all)"
    )
    d.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    d.set_defaults(func=cmd_dynamics)

    c = asub.add_parser(
        "context",
        help="the loss when the model may read only the last k characters, k = 1 to "
        "1024, beside n-gram models: how much context it really uses",
    )
    c.add_argument("run", metavar="RUN_DIR")
    c.add_argument("--out", required=True, metavar="DIR", help="folder for context.png and context.csv")
    c.add_argument("--split", choices=["train", "val", "test"], default="val", help="the text to read (default val)")
    c.add_argument(
        "--chars", type=flags.count, default=50_000, help="characters of the split to score in (default 50000; 0: all)"
    )
    c.add_argument("--positions", type=flags.count, default=2000, help="characters scored, spread evenly (default 2000)")
    c.add_argument("--max-context", type=flags.count, default=1024, help="the longest k, a power of 2 (default 1024)")
    c.add_argument("--orders", default="1-9", help="n-gram orders to compare with (default 1-9)")
    c.add_argument("--checkpoint", type=flags.which, default="best", metavar="WHICH", help=flags.WHICH_HELP)
    c.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    c.set_defaults(func=cmd_context)

    m = asub.add_parser(
        "emergence",
        help="per kept checkpoint and feature: the best single cell's |r| and a "
        "linear probe's score: when interpretable cells emerge",
    )
    m.add_argument("run", metavar="RUN_DIR")
    m.add_argument("--out", required=True, metavar="DIR", help="folder for emergence.json")
    m.add_argument("--split", choices=["train", "val", "test"], default="val", help="the text to read (default val)")
    m.add_argument("--chars", type=flags.count, default=20_000, help="characters to read (default 20000; 0: all)")
    m.add_argument(
        "--feature", action="append", default=[], metavar="NAME=REGEX", help="add a feature: inside matches of REGEX (repeatable)"
    )
    m.add_argument(
        "--feature-file",
        default=None,
        metavar="FILE",
        help="a long-range feature: lines `START LABEL`, character offsets in the text read, e.g. where each chapter starts",
    )
    m.add_argument(
        "--parts",
        default=None,
        metavar="REGEX",
        help="a long-range feature made from the text: each match of REGEX starts a new part (e.g. "
        "'// SPDX-License-Identifier' for each source file of the Linux corpus); the probe must "
        "tell the parts apart",
    )
    m.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    m.set_defaults(func=cmd_emergence)


def _say_what(command: str, choices: str):
    def refuse(args) -> int:
        from charnn.errors import CharnnError

        raise CharnnError(f"say what to {command}: {choices} (see charnn {command} --help)")

    return refuse


def cmd_errors(args) -> int:
    from charnn.api import load
    from charnn.study.oracles import CATEGORIES

    # the Python API's Model.errors: one path for both (its checks and messages too)
    a = load(args.run, args.checkpoint).errors(split=args.split, chars=args.chars, baseline=args.baseline, compare=args.compare)
    rep = a.report
    png, csv_path = a.save(args.out)
    print(f"{rep.errors:,} errors (p < 0.5) in {rep.chars:,} characters of {a.what}")
    head = f"{'category':16} {'errors':>8} {'share':>7}" + (f" {'right in other':>15}" if rep.compare else "")
    print(head)
    for c in CATEGORIES:
        line = f"{c:16} {rep.counts[c]:>8,} {100 * rep.share(c):>6.1f}%"
        if rep.compare:
            n, fixed = rep.compare[c]
            line += f" {fixed:>8,} ({100 * fixed / n if n else 0:.0f}%)"
        print(line)
    print(f"wrote {png} and {csv_path}", file=sys.stderr)
    return 0


def cmd_braces(args) -> int:
    from charnn.api import load
    from charnn.study.braces import fmt

    a = load(args.run, args.checkpoint).braces(split=args.split, chars=args.chars, order=args.order, ngram=args.ngram)
    rep = a.report
    png, csv_path = a.save(args.out)
    print(f"loss on '}}' by distance back to its '{{' ({rep.braces:,} braces in {a.what})")
    print(f"{'distance':>10} {'braces':>7} {'RNN':>7} {f'{rep.order}-gram':>8}")
    for lo, hi, n, r, g in rep.rows:
        span = f"{lo}-{hi}" if hi < 10**8 else f"{lo}+"
        print(f"{span:>10} {n:>7,} {fmt(r):>7} {fmt(g):>8}")
    print(f"wrote {png} and {csv_path}", file=sys.stderr)
    return 0


def _subject(args, tokens_ok: bool = False):
    from charnn.inspect import open_subject

    return open_subject(
        args.run,
        text=args.text,
        split=args.split,
        chars=args.chars,
        which=args.checkpoint,
        tokens_ok=tokens_ok,
        what=f"charnn inspect {args.inspect_command}",
        labelled_ok=True,
    )


def _colour(v: float) -> str:
    """ANSI 24-bit background for v in [-1, 1]: red, white, blue."""
    v = max(-1.0, min(1.0, v))
    k = int(255 * (1 - abs(v)))
    r, g, b = (255, k, k) if v < 0 else (k, k, 255)
    return f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m"


def _spark(values) -> str:
    bars = " ▁▂▃▄▅▆▇█"
    return "".join(bars[int(round((max(-1, min(1, v)) + 1) / 2 * 8))] for v in values)


def _snippet(subject, feature_values, top) -> dict:
    """The best cell's values over the stretch of text where the feature changes most."""
    from charnn.inspect.activations import RANGES, record_all
    from charnn.inspect.find import snippet_window

    a, b = snippet_window(feature_values, 80)
    lead = max(0, a - 500)  # read some context first, as the model did
    ch = record_all(subject.model, subject.ids[lead:b], (top.quantity,))
    lo, hi = RANGES[top.quantity]
    vals = ((ch.acts[top.quantity][top.layer, a - lead :, top.cell] - (lo + hi) / 2) / ((hi - lo) / 2)).tolist()
    return {"start": a, "text": subject.text[a:b], "values": [round(v, 3) for v in vals]}


def cmd_cells(args) -> int:
    from charnn.errors import CharnnError
    from charnn.web.pages import MAX_PAGE_CHARS, write_cells_page

    if args.chars > MAX_PAGE_CHARS:
        raise CharnnError(f"--chars {args.chars}: that is too many for one page; use at most {MAX_PAGE_CHARS}")
    subject = _subject(args, tokens_ok=True)
    path = write_cells_page(subject, args.out)
    units = "tokens" if subject.vocab.unit == "bpe" else "characters"
    print(f"wrote {path} ({len(subject.ids):,} {units} of {subject.what}); open it in a browser", file=sys.stderr)
    return 0


def cmd_attention(args) -> int:
    from charnn.web.pages import write_attention_page

    subject = _subject(args)
    path, data = write_attention_page(subject, args.out, args.top)
    if args.json:
        print(strict_json({"page": str(path), "ranking": data["ranking"]}))
        return 0
    for p in data["ranking"]:
        best = ", ".join(f"layer {s['layer']} head {s['head']} {s['score']:.2f}" for s in p["top"]) or "-"
        chance = f" (chance {p['top'][0]['chance']:.2f})" if p["top"] else ""
        print(f"{p['about']}: {best}{chance}")
    print(f"wrote {path} ({len(subject.ids):,} characters of {subject.what}); open it in a browser", file=sys.stderr)
    return 0


def cmd_find(args) -> int:
    from charnn.inspect import features as feats
    from charnn.inspect import find_cells

    subject = _subject(args)
    results = find_cells(subject, args.feature, top=max(1, args.top))
    fvals = {f.name: f.values for f in feats.compute(subject.text, args.feature, subject.context)}
    out = []
    for res in results:
        d = res.to_dict()
        d["snippet"] = _snippet(subject, fvals[res.name], res.top[0]) if res.top else None
        out.append(d)
    if args.json:
        print(strict_json({"text": subject.what, "chars": len(subject.ids), "features": out}, ensure_ascii=False))
        return 0
    tty = sys.stdout.isatty()
    units = "cells" if subject.model.cfg.recurrent else "MLP neurons (a transformer's units; quantity m)"
    print(f"{units} ranked by correlation with each feature over {len(subject.ids):,} characters of {subject.what}")
    for d in out:
        if not d["top"]:
            continue
        print()
        print(f"{d['feature']} ({d['about']}; non-zero for {100 * d['on_fraction']:.1f}% of characters)")
        for k, t in enumerate(d["top"]):
            tag = "best" if k == 0 else "    "
            print(f"  {tag} layer {t['layer']} cell {t['cell']:<4} {t['quantity']}  r = {t['r']:+.3f}")
        sn = d["snippet"]
        shown = sn["text"].replace("\n", "↵").replace("\t", "→")
        if tty:
            print("  " + "".join(_colour(v) + ch for ch, v in zip(shown, sn["values"])) + "\x1b[0m")
        else:
            print("  " + shown)
            print("  " + _spark(sn["values"]))
    absent = [d["feature"] for d in out if not d["top"]]
    if absent:
        print(f"\nconstant over this text, so not ranked: {', '.join(absent)}")
    best = next((d for d in out if d["top"]), None)
    if best:
        t = best["top"][0]
        src = f"--text {args.text}" if args.text else f"--split {args.split or 'val'}"
        print(
            f"\nsee any cell in a page: charnn inspect cells {args.run} {src} --out cells.html, then open "
            f"cells.html#layer={t['layer']}&cell={t['cell']}&q={t['quantity']}"
        )
    return 0


def cmd_saturation(args) -> int:
    from charnn.inspect import gate_saturation
    from charnn.inspect.saturation import write

    subject = _subject(args, tokens_ok=True)
    sat = gate_saturation(subject)
    c = subject.loaded.config.model
    png, csv_path = write(
        sat,
        Path(args.out),
        f"gate saturation: {c.cell} {c.layers}x{c.hidden}, {sat.chars:,} characters of {Path(subject.what).name}",
    )
    for g in sat.gates:
        left, right = sat.left[g], sat.right[g]
        per_layer = "  ".join(
            f"layer {k}: {100 * left[k].mean():.0f}% / {100 * right[k].mean():.0f}%" for k in range(left.shape[0])
        )
        print(f"{g} gate, mean share shut / open: {per_layer}")
    print(f"wrote {png} and {csv_path}", file=sys.stderr)
    return 0


def cmd_ablate(args) -> int:
    from charnn.inspect import ablate, parse_cells

    if not args.cells and not args.heads:
        raise CharnnError("say what to silence: --cells LAYER:INDEX[,...] (or, for a transformer, --heads LAYER:HEAD[,...])")
    subject = _subject(args)
    c = subject.model.cfg
    unit = "cells" if c.recurrent else "MLP neurons"
    if args.heads and c.recurrent:
        raise CharnnError(f"--heads silences a transformer's attention heads; this run is a {c.describe()} (use --cells)")
    cells = parse_cells(args.cells, c.layers, c.units, unit=unit) if args.cells else []
    heads = parse_cells(args.heads, c.layers, c.heads, "--heads", "heads") if args.heads else []
    rep = ablate(subject, cells, args.mode, args.feature, heads=heads)
    if args.json:
        print(strict_json({"text": subject.what, **rep.to_dict()}))
        return 0
    o = rep.overall
    held = {"zero": "zero", "mean": "their mean"}.get(args.mode, args.mode[6:])
    what = ([f"{unit} " + ", ".join(f"{a}:{b}" for a, b in cells) + f" held at {held}"] if cells else []) + (
        ["heads " + ", ".join(f"{a}:{b}" for a, b in heads) + " silenced"] if heads else []
    )
    print(f"{' and '.join(what)} over {o.chars:,} characters of {subject.what}")
    print(f"{'':22} {'chars':>8} {'loss':>8} {'ablated':>8} {'change':>8}")
    print(f"{'all characters':22} {o.chars:>8,} {o.base:>8.4f} {o.ablated:>8.4f} {o.delta:>+8.4f}")
    for name, (_about, on, off) in rep.features.items():
        for label, s in ((f"{name} on", on), (f"{name} off", off)):
            print(f"{label:22} {s.chars:>8,} {s.base:>8.4f} {s.ablated:>8.4f} {s.delta:>+8.4f}")
    if rep.features:
        worst = max(rep.features.items(), key=lambda kv: kv[1][1].delta - kv[1][2].delta)
        name, (_, on, off) = worst
        if math.isfinite(on.delta - off.delta):
            print(
                f"largest contrast: {name}: the loss rises {on.delta:+.4f} nats where it is on "
                f"and {off.delta:+.4f} where it is off"
            )
    return 0


def cmd_evolution(args) -> int:
    from charnn.web.pages import write_evolution_page

    kept: dict = {}
    png = None
    if args.analyses:
        kept, png = _evolution_analyses(args)
    path = write_evolution_page(args.run, args.out, kept, png)
    print(f"wrote {path}; open it in a browser", file=sys.stderr)
    return 0


def _evolution_analyses(args) -> tuple[dict, bytes]:
    """Per kept checkpoint: its loss and best cell per feature; and the dynamics plot."""
    import io

    from charnn.inspect import find_cells, open_subject
    from charnn.study.dynamics import dynamics, plot

    say = lambda m: print(f"  {m}", file=sys.stderr, flush=True)  # noqa: E731
    rep = dynamics(args.run, chars=args.chars, progress=say)
    kept = {}
    for c in rep.checkpoints:
        subject = open_subject(
            args.run, split="val", chars=args.chars, which=f"step:{c['step']}", what="charnn inspect evolution --analyses"
        )
        cells = {
            f.name: (f.top[0].layer, f.top[0].cell, f.top[0].quantity, f.top[0].r) for f in find_cells(subject, top=1) if f.top
        }
        kept[c["step"]] = {"loss": c["val_loss"], "chars": rep.chars, "cells": cells}
    buf = io.BytesIO()
    plot(rep, buf, f"{Path(args.run).resolve().name}: divergence from n-gram models over training")
    return kept, buf.getvalue()


def cmd_dynamics(args) -> int:
    from charnn.api import load
    from charnn.study.dynamics import fmt

    say = None if args.json else (lambda m: print(f"  {m}", file=sys.stderr, flush=True))
    a = load(args.run, "latest").dynamics(split=args.split, chars=args.chars, orders=args.orders, progress=say)
    rep = a.report
    png, csv_path = a.save(args.out)
    if args.json:
        d = rep.to_dict()
        print(
            strict_json(
                {
                    "orders": d["orders"],
                    "checkpoints": [
                        {k: c[k] for k in ("step", "val_loss", "closest_order", "divergence")} for c in d["checkpoints"]
                    ],
                }
            )
        )
        return 0
    print(f"symmetric KL (nats/char) between each kept checkpoint and n-gram models, on {rep.chars:,} characters of {rep.what}")
    print(f"{'step':>8} {'loss':>6} {'closest':>8} " + " ".join(f"{f'{n}-gram':>7}" for n in rep.orders))
    for c in rep.checkpoints:
        print(
            f"{c['step']:>8} {c['val_loss']:>6.3f} {c['closest_order']:>8} "
            + " ".join(f"{fmt(c['divergence'][n]):>7}" for n in rep.orders)
        )
    print(f"{'n-gram loss':>24} " + " ".join(f"{fmt(rep.ngram_loss[n]):>7}" for n in rep.orders))
    print(f"wrote {png} and {csv_path}", file=sys.stderr)
    return 0


def cmd_context(args) -> int:
    from charnn.api import load

    say = None if args.json else (lambda m: print(f"  {m}", file=sys.stderr, flush=True))
    model = load(args.run, args.checkpoint)
    kw = dict(positions=args.positions, max_context=args.max_context, orders=args.orders, progress=say)
    a = model.context(split=args.split, chars=args.chars, **kw)
    rep = a.report
    png, csv_path = a.save(args.out)
    if args.json:
        d = rep.to_dict()
        print(strict_json({k: d[k] for k in ("train_seq_len", "unlimited", "context", "ngram")}))
        return 0
    print(f"loss (nats/char) at {rep.positions:,} characters of {rep.what}, reading only the last k characters")
    for c in rep.context:
        mark = "  <- training window" if c["k"] <= rep.train_seq_len < 2 * c["k"] else ""
        print(f"  k = {c['k']:>5}  {c['loss']:.4f}{mark}")
    print(f"  all       {rep.unlimited:.4f}")
    print("n-gram models: " + "  ".join(f"{g['order']}: {g['loss']:.4f}" for g in rep.ngram))
    print(f"wrote {png} and {csv_path}", file=sys.stderr)
    return 0


def cmd_emergence(args) -> int:
    from charnn.api import load
    from charnn.study.emergence import check_out

    out = Path(args.out)
    check_out(out)  # before the work, as well as when writing
    say = None if args.json else (lambda m: print(f"  {m}", file=sys.stderr, flush=True))
    model = load(args.run, "latest")
    kw = dict(features=args.feature, feature_file=args.feature_file, parts=args.parts, progress=say)
    a = model.emergence(split=args.split, chars=args.chars, **kw)
    rep = a.report
    d = rep.to_dict()
    a.save(out)
    if args.json:
        print(
            strict_json(
                {
                    "checkpoints": [
                        {
                            "step": c["step"],
                            "features": {
                                n: {"best_cell_r": f["best_cell_r"], "probe_score": f["probe_score"]}
                                for n, f in c["features"].items()
                            },
                        }
                        for c in d["checkpoints"]
                    ]
                }
            )
        )
        return 0
    steps = [c["step"] for c in rep.checkpoints]
    print(
        f"per kept checkpoint: best single cell |r| / linear probe (balanced accuracy, chance 0.50 for on/off; "
        f"R^2 for counts), on "
        f"{rep.chars:,} characters of {rep.what}"
    )
    print(f"{'feature':<16}" + "".join(f"{s:>14}" for s in steps))
    for name in rep.features:
        cells = [c["features"][name] for c in rep.checkpoints]
        print(f"{name:<16}" + "".join(f"{_num(f['best_cell_r']):>6} / {_num(f['probe_score']):<5}" for f in cells))
    for name in rep.features:
        probe, cell = rep.first_steps(name)
        if probe is not None and (cell is None or cell > probe):
            print(
                f"{name}: the probe recovers it from step {probe}, a single cell "
                + (f"only from step {cell}" if cell else "at no kept step")
                + ": the model knows it before any "
                "one cell shows it"
            )
    print(f"wrote {out / 'emergence.json'}", file=sys.stderr)
    return 0


def _num(v) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.2f}"
