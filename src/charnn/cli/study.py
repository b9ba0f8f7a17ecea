"""`charnn ngram`, `charnn grid`, `charnn compare` and `charnn evaluate-samples`: the command line of the
paper's study and of comparisons between models."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from charnn.cli import args as flags
from charnn.errors import CharnnError
from charnn.files import strict_json


def add_parsers(sub) -> None:
    _add_ngram(sub)
    _add_grid(sub)
    _add_compare(sub)
    _add_attribute(sub)
    _add_evaluate_samples(sub)


def _add_ngram(sub) -> None:
    n = sub.add_parser("ngram", help="an interpolated Kneser-Ney n-gram baseline: its validation and test loss")
    n.add_argument("text", metavar="TEXT", help="a text file, a folder or a built-in corpus, as for train")
    n.add_argument("--order", type=flags.count, required=True, help="n: characters per n-gram (1..30)")
    n.add_argument(
        "--split",
        type=flags.split,
        default=(0.9, 0.05, 0.05),
        metavar="TRAIN,VAL,TEST",
        help="contiguous split fractions (default 0.9,0.05,0.05)",
    )
    n.add_argument("--include", default="*", metavar="GLOB", help="files to read inside a folder")
    n.add_argument("--unit", choices=["char", "bytes"], default="char")
    n.add_argument(
        "--discount",
        type=flags.number,
        default=None,
        help="one fixed Kneser-Ney discount in (0, 1) (default: modified Kneser-Ney, three "
        "discounts per order estimated from counts of counts)",
    )
    n.add_argument(
        "--save", metavar="FILE", default=None, help="keep the model (safetensors) for `charnn analyze errors --baseline FILE`"
    )
    n.add_argument("--json", action="store_true", help="print one JSON object")

    n.set_defaults(func=cmd_ngram)


def _add_grid(sub) -> None:
    gr = sub.add_parser("grid", help="the paper's Table 1: cells x layers at matched parameter budgets")
    gr.add_argument("text", metavar="TEXT", help="a text file, a folder or a built-in corpus, as for train")
    gr.add_argument("--out", required=True, metavar="DIR", help="folder for the runs and the table")
    gr.add_argument("--cells", default="rnn,lstm,gru", help="cell types (default rnn,lstm,gru)")
    gr.add_argument("--layers", default="1,2,3", help="depths (default 1,2,3)")
    gr.add_argument("--params", default="50k,130k,400k,1.3m", help="parameter budgets (default 50k,130k,400k,1.3m)")
    gr.add_argument(
        "--max-time",
        type=flags.duration,
        default=None,
        metavar="PER_RUN",
        help="training time per run, e.g. 5m (the same for every run)",
    )
    gr.add_argument("--max-steps", type=flags.count, default=None, metavar="PER_RUN", help="or steps per run")
    gr.add_argument(
        "--split",
        type=flags.split,
        default=(0.9, 0.05, 0.05),
        metavar="TRAIN,VAL,TEST",
        help="contiguous split fractions (default 0.9,0.05,0.05; the paper: 0.8,0.1,0.1 for War and Peace)",
    )
    gr.add_argument("--embed", type=flags.count, default=64, help="embedding width of every model (default 64)")
    gr.add_argument(
        "--lr",
        type=flags.number,
        default=8e-3,
        help="peak learning rate of every run (default 8e-3; the rest is fixed: grid.PROTOCOL)",
    )
    gr.add_argument("--dropout", type=flags.number, default=0.0, help="dropout of every run (default 0)")
    gr.add_argument("--jobs", type=flags.count, default=1, help="runs trained at once (default 1)")

    gr.set_defaults(func=cmd_grid)


def _add_compare(sub) -> None:
    co = sub.add_parser(
        "compare",
        help="characters against byte-pair tokens, recurrence against attention: the "
        "same text, time and parameters, scored in bits per character",
    )
    co.add_argument("text", metavar="TEXT", help="a text file, a folder or a built-in corpus, as for train")
    co.add_argument("--out", required=True, metavar="DIR", help="folder for the runs, the table and the plot")
    co.add_argument(
        "--units",
        default=None,
        help="what each model reads: char or bpe:K "
        "(K tokens learned from the training split); default char,bpe:256,bpe:1024, or char with --models",
    )
    co.add_argument(
        "--models",
        default=None,
        help="the models to train on each unit, from lstm, gru, rnn and "
        "transformer (the gpt-muon preset, its width set by --params); default lstm",
    )
    co.add_argument(
        "--max-time",
        type=flags.duration,
        default=None,
        metavar="PER_RUN",
        help="training time per unit, e.g. 5m (the same for every unit)",
    )
    co.add_argument("--max-steps", type=flags.count, default=None, metavar="PER_RUN", help="or steps per unit")
    co.add_argument(
        "--params",
        default=None,
        metavar="N",
        help="parameters of every model, e.g. 400k (default: the default model reading characters)",
    )
    co.add_argument(
        "--layers",
        type=flags.count,
        default=1,
        help="layers of every recurrent model (default 1; a transformer has gpt-muon's 2)",
    )
    co.add_argument(
        "--split",
        type=flags.split,
        default=(0.9, 0.05, 0.05),
        metavar="TRAIN,VAL,TEST",
        help="contiguous split fractions, cut on characters (default 0.9,0.05,0.05)",
    )
    co.add_argument("--jobs", type=flags.count, default=1, help="units trained at once (default 1: fair timing)")
    co.add_argument("--json", action="store_true", help="print the results as one JSON object")
    co.set_defaults(func=cmd_compare)


def _add_evaluate_samples(sub) -> None:
    es = sub.add_parser("evaluate-samples", help="novelty, copying, n-gram divergence and balance of generated text")
    es.add_argument(
        "samples",
        metavar="SAMPLES_FILE",
        help="output of `charnn sample --num N` (samples separated by ----) or a run's samples.jsonl",
    )
    es.add_argument("--train", required=True, metavar="TEXT", help="the training text (file, folder or corpus)")
    es.add_argument(
        "--split",
        type=flags.split,
        default=(0.9, 0.05, 0.05),
        metavar="TRAIN,VAL,TEST",
        help="which part of TEXT was trained on (default 0.9,0.05,0.05); the validation part is the held-out text",
    )
    es.add_argument(
        "--documents",
        type=flags.document_split,
        default=None,
        metavar="SPLIT",
        help="the run's --documents: the samples are documents cut the same way (charnn sample prints "
        "one a line, or a blank line between them), and the share found verbatim in the training "
        "split is reported",
    )
    es.add_argument(
        "--seed",
        type=flags.count,
        default=1337,
        help="with --documents: the run's --seed, which shuffled the documents before the split",
    )
    es.add_argument("--json", action="store_true", help="print one JSON object")
    es.set_defaults(func=cmd_evaluate_samples)


def _add_attribute(sub) -> None:
    at = sub.add_parser(
        "attribute",
        help="who wrote it: each document's bits per character under every label of "
        "a labelled run, and the posterior over labels",
    )
    at.add_argument("run", nargs="?", metavar="RUN_DIR", help="a run trained with --documents SPLIT --label REGEX (or --labels)")
    at.add_argument(
        "text",
        nargs="?",
        metavar="TEXT_OR_DIR",
        help="a file (cut into documents as the run cuts them) or a folder (each file one document)",
    )
    at.add_argument(
        "--eval",
        metavar="CORPUS",
        default=None,
        help="instead: measure attribution on CORPUS by K folds, charnn beside Kneser-Ney n-grams, gzip "
        "and Burrows' Delta (needs --documents, --label, --out)",
    )
    at.add_argument(
        "--documents",
        type=flags.document_split,
        default=None,
        metavar="SPLIT",
        help="with --eval: how CORPUS is cut into documents",
    )
    at.add_argument("--label", default=None, metavar="REGEX", help="with --eval: each document's label (first group)")
    at.add_argument("--folds", type=flags.count, default=5, help="with --eval: folds (default 5)")
    at.add_argument(
        "--max-time",
        type=flags.duration,
        default=None,
        metavar="PER_MODEL",
        help="with --eval: charnn's training time per model (default 60s)",
    )
    at.add_argument("--max-steps", type=flags.count, default=None, metavar="PER_MODEL", help="with --eval: or steps")
    at.add_argument(
        "--preset",
        default=None,
        help="with --eval: charnn's preset for its models (default: the default "
        "preset with AdamW at 1.2e-2 and 32 streams, measured best for this)",
    )
    at.add_argument(
        "--out", default=None, metavar="DIR", help="with --eval: folder for the models, the folds and attribution.json/.csv/.png"
    )
    at.add_argument(
        "--calibrate",
        type=flags.count,
        default=None,
        metavar="N",
        help="calibrate each label on N documents of every label (default 16; 0: raw bits per character): "
        "from the run's training split, or with --eval each fold's training documents",
    )
    at.add_argument(
        "--prior",
        choices=["uniform", "train"],
        default="uniform",
        help="the prior over labels: uniform (default) or the training split's share of documents",
    )
    at.add_argument("--checkpoint", type=flags.which, default="best", metavar="WHICH", help=flags.WHICH_HELP)
    at.add_argument("--json", action="store_true", help="print one JSON object")
    at.set_defaults(func=cmd_attribute)


def cmd_ngram(args) -> int:
    from charnn.config import DataConfig
    from charnn.corpus import resolve
    from charnn.study.ngram import train_and_score

    if not 1 <= args.order <= 30:
        raise CharnnError(f"--order must be between 1 and 30, got {args.order}")
    if args.discount is not None and not 0 < args.discount < 1:
        raise CharnnError(f"--discount must be between 0 and 1, got {args.discount}")
    DataConfig(text=args.text, split=args.split).validate()
    path = Path(args.text).expanduser()
    text = str(path.resolve()) if path.exists() else args.text
    resolve(text, include=args.include)  # a missing file is named before any work
    if args.save:
        from charnn.files import refuse_foreign
        from charnn.study.ngram import NGRAM_FORMAT

        save = Path(args.save)
        if not save.parent.is_dir():
            raise CharnnError(f"--save: the folder {save.parent} does not exist")
        refuse_foreign(save, NGRAM_FORMAT.encode())
    rep = train_and_score(text, args.order, args.split, args.include, args.unit, discount=args.discount, save=args.save)
    if args.json:
        print(strict_json(rep.to_dict()))
        return 0
    kind = f"Kneser-Ney (discount {args.discount:g})" if args.discount is not None else "modified Kneser-Ney"
    print(f"{kind} {args.order}-gram on {rep.train_chars:,} training characters of {args.text} ({rep.seconds:.1f} s)")
    for name, (loss, chars) in rep.losses.items():
        print(f"{name:5s} {chars:>10,} characters  loss {loss:.4f} nats  {loss / math.log(2):.4f} bits/char")
    return 0


def cmd_compare(args) -> int:
    from charnn.config import DataConfig
    from charnn.study import compare, grid

    models = compare.parse_models(args.models) if args.models else [compare.CELL]
    units = compare.parse_units(args.units or ("char" if args.models else "char,bpe:256,bpe:1024"))
    if args.jobs < 1:
        raise CharnnError("--jobs must be at least 1")
    if args.params and "," in args.params:
        raise CharnnError(f"--params {args.params!r}: give one size, e.g. 400k")
    params = grid.parse_budgets(args.params)[0] if args.params else 0
    settings = compare.Settings(
        max_time=args.max_time or 0.0, max_steps=args.max_steps or 0, params=params, layers=args.layers, split=tuple(args.split)
    ).validate()
    DataConfig(text=args.text, split=args.split).validate()
    path = Path(args.text).expanduser()
    text = str(path.resolve()) if path.exists() else args.text
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CharnnError(f"{out} is a file; --out takes a folder for the runs and the table")
    compare.check_outputs(out)
    entries = compare.plan(text, units, settings, progress=say, models=models)
    shapes = (
        f"{e.label} ({e.vocab} symbols, {e.hidden} {'cells' if e.cell != 'transformer' else 'wide'}, {e.params:,} parameters)"
        for e in entries
    )
    say(f"compare: {', '.join(shapes)}")
    results = compare.compare(
        text,
        out,
        entries,
        settings,
        args.jobs,
        progress=lambda r: say(f"  {r['model']} on {r['unit']}: {r['test_bpc']:.4f} bits per character"),
    )
    budget = f"{settings.max_time:g} s" if settings.max_time else f"{settings.max_steps} steps"
    md = compare.write(results, out, text, f"{Path(text).name}: {budget} per unit, ~{entries[0].params:,} parameters each")
    if args.json:
        print(strict_json({"text": text, "results": results}))
    else:
        print(md, end="")
    say(f"wrote {out / 'compare.md'}, {out / 'compare.csv'}, {out / 'compare.json'} and {out / 'compare.png'}")
    return 0


def cmd_grid(args) -> int:
    from charnn.config import DataConfig
    from charnn.data import prepare
    from charnn.study import grid

    cells, layers = grid.parse_cells(args.cells), grid.parse_layers(args.layers)
    budgets = grid.parse_budgets(args.params)
    if args.jobs < 1:
        raise CharnnError("--jobs must be at least 1")
    settings = grid.Settings(
        embed=args.embed,
        split=tuple(args.split),
        dropout=args.dropout,
        lr=args.lr,
        max_time=args.max_time or 0.0,
        max_steps=args.max_steps or 0,
    ).validate()
    DataConfig(text=args.text, split=args.split).validate()
    path = Path(args.text).expanduser()
    text = str(path.resolve()) if path.exists() else args.text
    vocab = len(prepare(text).vocab)
    entries = grid.plan(cells, layers, budgets, vocab, args.embed)
    out = Path(args.out)
    done = sum(grid.cached_of(out, e) is not None for e in entries)
    print(f"grid: {len(entries)} runs ({done} already finished) on {args.text}, vocabulary {vocab}", file=sys.stderr)
    results = grid.run_grid(
        text,
        out,
        entries,
        settings,
        args.jobs,
        progress=lambda r: print(f"  {r['run']}: test loss {r['test_loss']:.4f}", file=sys.stderr),
    )
    md, csv_text = grid.table(results)
    (out / "results.md").write_text(md, encoding="utf-8")
    (out / "results.csv").write_text(csv_text, encoding="utf-8")
    grid.plot(results, out / "grid.png")
    print(md, end="")
    print(f"wrote {out / 'results.md'}, {out / 'results.csv'} and {out / 'grid.png'}", file=sys.stderr)
    return 0


def cmd_attribute(args) -> int:
    from charnn import checkpoint as ckpt
    from charnn.attribution.score import CALIBRATE, MAX_CALIBRATE, attribute, documents_of, training_references

    calibrate = CALIBRATE if args.calibrate is None else args.calibrate
    if calibrate > MAX_CALIBRATE:
        raise CharnnError(f"--calibrate {calibrate}: at most {MAX_CALIBRATE} reference documents per label")
    if args.eval is not None:
        return _attribute_eval(args, calibrate)
    if not args.run or not args.text:
        raise CharnnError(
            "charnn attribute RUN_DIR TEXT_OR_DIR, or charnn attribute --eval CORPUS --documents SPLIT --label REGEX --out DIR"
        )
    loaded = ckpt.load(args.run, args.checkpoint)
    if not loaded.meta.get("labels"):
        raise CharnnError(f"{args.run} was trained without labels; attribution needs --documents SPLIT --label REGEX")
    docs = documents_of(args.text, loaded.config.data.documents)
    reference = None
    if calibrate:
        try:
            reference = training_references(loaded, calibrate)
        except CharnnError as e:
            raise CharnnError(
                f"the calibration reads documents of the run's training split: {e}; give --calibrate 0 "
                f"to attribute by raw bits per character"
            ) from None
    res = attribute(loaded, loaded.build_model(), docs, args.prior, reference)
    if args.json:
        print(
            strict_json(
                {
                    "run": str(args.run),
                    "prior": args.prior,
                    "labels": loaded.meta["labels"],
                    "calibrated_on": len(reference or []),
                    "documents": [r.to_dict() for r in res],
                },
                ensure_ascii=False,
            )
        )
        return 0
    names = loaded.meta["labels"]
    width = max(12, *(len(n) for n in names))
    how = f"calibrated on {len(reference)} training documents (up to {calibrate} a label)" if reference else "not calibrated"
    print(f"bits per character under each label ({args.prior} prior, {how}); the verdict is the most probable label")
    print(f"{'document':<44} {'chars':>7} " + " ".join(f"{n[:width]:>{width}}" for n in names) + "  verdict (posterior)")
    for r in res:
        print(
            f"{r.name[:44]:<44} {r.chars:>7,} "
            + " ".join(f"{r.bpc[n]:>{width}.4f}" for n in names)
            + f"  {r.verdict} ({r.posterior[r.verdict]:.3f})"
        )
    return 0


def _attribute_eval(args, calibrate: int) -> int:
    from charnn.attribution.folds import ATTRIBUTION_TRAIN, EvalSettings, evaluate_attribution, table
    from charnn.config import RunConfig, apply_preset
    from charnn.files import refuse_foreign

    if args.run or args.text:
        raise CharnnError("--eval trains its own models: give CORPUS alone (no RUN_DIR or TEXT)")
    if not args.documents or not args.label or not args.out:
        raise CharnnError("--eval needs --documents SPLIT, --label REGEX and --out DIR")
    if not 2 <= args.folds <= 100:
        raise CharnnError(f"--folds must be from 2 to 100, got {args.folds}")
    apply_preset(RunConfig(), args.preset or "default")  # an unknown preset is named before any work
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CharnnError(f"{out} is a file; --out takes a folder")
    refuse_foreign(out / "attribution.json", b'"methods"')
    out.mkdir(parents=True, exist_ok=True)
    s = EvalSettings(
        args.documents,
        args.label,
        args.folds,
        max_time=args.max_time or (0.0 if args.max_steps else 60.0),
        max_steps=args.max_steps or 0,
        preset=args.preset or "default",
        calibrate=calibrate,
        train=None if args.preset else ATTRIBUTION_TRAIN,
    )
    result = evaluate_attribution(args.eval, out, s, progress=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        print(strict_json(result))
    else:
        print(table(result), end="")
    print(f"wrote {out / 'attribution.json'}, .csv, .png and folds.json", file=sys.stderr)
    return 0


def cmd_evaluate_samples(args) -> int:
    from charnn.config import DataConfig
    from charnn.data import prepare
    from charnn.documents import END, novelty, split_documents
    from charnn.samplestats import evaluate_samples, read_samples

    DataConfig(text=args.train, split=args.split, documents=args.documents or "").validate()
    samples = read_samples(args.samples)
    path = Path(args.train).expanduser()
    enc = prepare(
        str(path.resolve()) if path.exists() else args.train, seed=args.seed, split=args.split, documents=args.documents or ""
    )
    parts = enc.splits(args.split)
    train_text, heldout = enc.vocab.decode(parts["train"]), enc.vocab.decode(parts["val"])
    if not heldout:
        raise CharnnError(f"the validation part of {args.train} is empty; give a --split with a validation share")
    new = None
    if args.documents:
        samples = [d for s in samples for d in split_documents(s, args.documents)]
        new = novelty(samples, train_text.split(END)[:-1])
        train_text, heldout = train_text.replace(END, "\n"), heldout.replace(END, "\n")
    st = evaluate_samples(samples, train_text, heldout)
    if args.json:
        print(strict_json({**st.to_dict(), **({"documents": len(samples), "novel_documents": new} if new is not None else {})}))
        return 0
    if new is not None:
        print(f"{len(samples)} documents, {new:.1%} of them not in the training split")
    print(f"{st.samples} samples, {st.chars:,} characters, against {len(train_text):,} training characters")
    print("novel substrings (never in the training text), by length:")
    print("  " + "  ".join(f"{k}: {100 * v:.1f}%" for k, v in st.novelty.items()))
    print(f"longest span copied from the training text: {st.longest_copy} characters")
    print(
        "character n-gram divergence from held-out text (Jensen-Shannon, nats; 0 = same): "
        + "  ".join(f"{n}-grams {v:.4f}" for n, v in st.js_divergence.items())
    )
    print(f"words that occur in the training text: {100 * st.known_words:.1f}%")
    print(f"samples with balanced brackets and paired double quotes: {100 * st.balanced:.1f}%")
    return 0
