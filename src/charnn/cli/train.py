"""`charnn train`, `sample`, `eval`, `info` and `check`: the core's command line."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

from charnn.api import SETTINGS
from charnn.cli import args as flags
from charnn.config import CELLS, PRESETS
from charnn.errors import CharnnError
from charnn.files import strict_json

# flag dest -> the config section whose field it sets: a flag named like a field sets that field
# (the Python API's settings; TEXT is the positional argument, vocab_size and labels come from the data)
CONFIG_FIELDS = SETTINGS


def add_parsers(sub) -> None:
    _add_train(sub)
    _add_sample(sub)
    _add_eval_check_info(sub)


def _add_data_flags(g) -> None:
    g.add_argument("--include", default=None, metavar="GLOB", help="files to read inside a folder (default *)")
    g.add_argument(
        "--unit",
        choices=["char", "bytes", "bpe"],
        default=None,
        help="model Unicode characters (default), raw bytes, or byte-pair tokens (bpe) learned from the "
        "training split; a token model's losses are also given in bits per character",
    )
    g.add_argument(
        "--bpe-vocab",
        "--vocab-size",  # its first name, kept so that older commands still run
        dest="bpe_vocab",
        type=flags.count,
        default=None,
        metavar="K",
        help="with --unit bpe: how many tokens to learn (default 1024)",
    )
    g.add_argument(
        "--encoding-errors",
        choices=["strict", "replace"],
        default=None,
        help="what to do with invalid UTF-8 (default strict: stop with the byte offset)",
    )
    g.add_argument(
        "--split",
        type=flags.split,
        default=None,
        metavar="TRAIN,VAL,TEST",
        help="contiguous split fractions (default 0.9,0.05,0.05)",
    )
    g.add_argument(
        "--label",
        default=None,
        metavar="REGEX",
        help="with --documents: each document's label is the first group of this regex's first match "
        "inside it (multi-line mode), e.g. '^([A-Z][A-Z ]+):$'; the model is conditioned on it at "
        "every step, and documents without a match are left out (and listed)",
    )
    g.add_argument(
        "--labels",
        dest="labels_file",
        default=None,
        metavar="FILE",
        help="with --documents: or one label a line, one line per document in the text's order",
    )
    g.add_argument(
        "--documents",
        type=flags.document_split,
        default=None,
        metavar="SPLIT",
        help="a collection of short texts: line (one document a line), blank (separated by blank lines) "
        "or a regular expression matching each document's start; each ends with an end symbol, the "
        "splits cut between documents (shuffled by --seed) and samples are whole documents",
    )
    g.add_argument(
        "--max-document",
        type=int,
        default=None,
        metavar="CHARS",
        help="with --documents: the longest document a run takes (default 100,000 characters); a longer "
        "one is refused, as it most likely means SPLIT does not cut the text where documents start",
    )


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train a model on a text file, a folder or a built-in corpus")
    t.add_argument(
        "text",
        nargs="?",
        metavar="TEXT",
        help="a text file, a folder (read recursively) or a built-in corpus: stdlib (default), shakespeare",
    )
    t.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory for checkpoints, logs and samples")
    t.add_argument("--preset", default=None, help=f"named settings: {', '.join(PRESETS)} (flags override it)")
    _add_model_flags(t.add_argument_group("model"))
    _add_data_flags(t.add_argument_group("data"))
    _add_optimisation_flags(t.add_argument_group("optimisation"))
    _add_stopping_flags(t.add_argument_group("stopping and evaluation"))
    _add_run_flags(t.add_argument_group("run"))
    t.set_defaults(func=cmd_train)


def _add_optimisation_flags(g) -> None:
    g.add_argument("--seq-len", type=flags.count, default=None, help="characters per window (truncated BPTT length)")
    g.add_argument("--batch-size", type=flags.count, default=None, help="parallel streams per step")
    g.add_argument("--lr", type=flags.number, default=None, help="peak learning rate")
    g.add_argument(
        "--optimizer",
        choices=["adamw", "rmsprop", "muon"],
        default=None,
        help="muon: Muon on the hidden matrices, AdamW on the rest (one lr)",
    )
    g.add_argument(
        "--muon-ns-steps",
        type=flags.count,
        default=None,
        metavar="N",
        help="Newton-Schulz iterations per Muon update (default 5; the default and large presets 3: the same loss "
        "per step, 10%% faster)",
    )
    g.add_argument(
        "--muon-gates",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Muon orthogonalises each gate's block of an LSTM's or GRU's recurrent matrices on its own, not the "
        "stacked matrix (on in the default and large presets: 0.008-0.011 nats lower at 1,200 steps of the default)",
    )
    g.add_argument("--weight-decay", type=flags.number, default=None, help="AdamW weight decay")
    g.add_argument(
        "--schedule",
        choices=["cosine", "epoch-decay", "constant"],
        default=None,
        help="cosine: warmup then cosine decay over the budget; epoch-decay: char-rnn's per-epoch decay",
    )
    g.add_argument(
        "--min-lr-frac",
        type=flags.number,
        default=None,
        metavar="F",
        help="cosine decays to this fraction of --lr (default 0.05; the large preset 0.2)",
    )
    g.add_argument("--warmup-steps", type=flags.count, default=None)
    g.add_argument("--grad-clip", type=flags.number, default=None, help="clip the gradient norm to this (0: off)")
    g.add_argument("--grad-clamp", type=flags.number, default=None, help="char-rnn's element-wise gradient clamp (0: off)")
    g.add_argument(
        "--ema",
        type=flags.number,
        default=None,
        metavar="DECAY",
        help="evaluate, sample snapshots and keep an exponential moving average of the weights with this "
        "decay, e.g. 0.999 (default 0: off); the best and kept checkpoints hold the average",
    )
    g.add_argument(
        "--ngram-mix",
        type=flags.count,
        default=None,
        metavar="N",
        help="at the end, mix the best model with a Kneser-Ney N-gram of the training split (linear or geometric, "
        "whichever scores lower), fitted on the validation split, and report the mixture's loss (kept in "
        "RUN/mixture.json; default 0: off)",
    )
    g.add_argument(
        "--windows",
        choices=["streams", "random"],
        default=None,
        help="training windows: consecutive windows of parallel streams, the state carried (default; "
        "recurrent cells need it), or random places at every step (the gpt presets: a transformer "
        "carries no state)",
    )


def _add_stopping_flags(g) -> None:
    g.add_argument("--max-steps", type=flags.count, default=None, help="stop after this many steps")
    g.add_argument("--max-epochs", type=flags.number, default=None, help="stop after this many passes over the data")
    g.add_argument(
        "--max-time",
        type=flags.duration,
        default=None,
        metavar="DURATION",
        help="stop after this much wall time, e.g. 60s, 10m, 1h",
    )
    g.add_argument(
        "--patience", type=flags.count, default=None, help="stop after this many evaluations without a better validation loss"
    )
    g.add_argument("--eval-every", type=flags.count, default=None, help="evaluate every N steps")
    g.add_argument(
        "--eval-chars",
        type=flags.count,
        default=None,
        help="validation characters per evaluation during training (default 2,000,000; 0: the whole "
        "split); charnn eval and the end-of-run report read the whole split",
    )
    g.add_argument(
        "--checkpoint-every",
        dest="checkpoint_seconds",
        type=flags.duration,
        default=None,
        metavar="DURATION",
        help="save the full training state at least this often besides every evaluation (default 5m; 0: only at evaluations)",
    )
    g.add_argument(
        "--keep-checkpoints",
        choices=["snapshots", "none"],
        default=None,
        help="keep the weights over training in RUN/checkpoints: at steps 100, 300, 500, 700, 1200, 2000, "
        "then each doubling (default snapshots), or none",
    )
    g.add_argument(
        "--keep-every", type=flags.count, default=None, metavar="N", help="also keep the weights every N steps (default 0: off)"
    )


def _add_run_flags(g) -> None:
    g.add_argument("--seed", type=flags.count, default=None, help="random seed (weights, dropout, file order)")
    g.add_argument("--device", choices=flags.DEVICES, default=None)
    g.add_argument("--threads", type=flags.count, default=None, help="CPU threads for torch (0: torch's choice)")
    g.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default=None,
        help="fp32, bf16 autocast (on a CPU the recurrence too, through oneDNN's bf16 RNN, and a "
        "transformer's attention kept fp32; on a GPU the recurrence stays fp32), or auto: bf16 on a CPU "
        "with bf16 units, else fp32 (default: auto with the default, large, long and gpt-muon presets, "
        "fp32 with the others)",
    )
    g.add_argument(
        "--compile",
        action="store_const",
        const=True,
        default=None,
        help="torch.compile the training step (no gain measured on an H200 or a CPU)",
    )
    g.add_argument(
        "--cuda-graph",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replay each step from one captured CUDA graph: the same run, about 2.5-3x the steps per "
        "second for the default model on an H200 (one-layer LSTMs in fp32)",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out exactly where its last checkpoint stopped (append it to the "
        "original command, or give only --out; settings that differ from the run's are refused)",
    )
    g.add_argument("--init-from", metavar="RUN_DIR", default=None, help="start from this run's weights (fine-tuning)")
    g.add_argument(
        "--tensorboard",
        action="store_const",
        const=True,
        default=None,
        help="also write the curves (losses, bits/char, learning rate, gradient norm, chars/s) and the "
        "snapshot samples for TensorBoard under RUN_DIR/tensorboard (needs pip install tensorboard)",
    )
    g.add_argument("--samples", type=flags.count, default=2, help="samples to print when training ends (default 2)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_sample(sub) -> None:
    s = sub.add_parser("sample", help="generate text from a trained model")
    s.add_argument("run", metavar="RUN_DIR", help="a run directory or a .safetensors checkpoint")
    s.add_argument("--prime", default="", help="text to start from (printed first)")
    s.add_argument("--prime-file", default=None, metavar="FILE", help="or the text of FILE (UTF-8, at most 1 MB)")
    s.add_argument(
        "--beam",
        type=flags.count,
        default=None,
        metavar="K",
        help="print the most likely continuation a beam of K finds (K = 1: greedy; never less likely "
        "than greedy), with its log-likelihood; --length units (at most 10,000). A documents run: the most likely "
        "whole document (--label, --clamp apply; --length caps it)",
    )
    s.add_argument("--temperature", type=flags.number, default=0.8, help="0 picks the most likely character (default 0.8)")
    s.add_argument("--top-k", type=flags.count, default=0, help="sample from the k most likely (0: off)")
    s.add_argument("--top-p", type=flags.number, default=1.0, help="nucleus sampling threshold (1: off)")
    s.add_argument(
        "--length", type=flags.count, default=500, help="characters to generate per sample (tokens, for a --unit bpe model)"
    )
    s.add_argument("--num", type=flags.count, default=1, help="samples to generate in one batch (at most 10,000)")
    s.add_argument(
        "--documents",
        type=flags.count,
        default=None,
        metavar="N",
        help="a run trained with --documents: N whole documents (each ends at the end symbol; --length "
        "caps one, and a document that reaches it is drawn again; default --num)",
    )
    s.add_argument(
        "--label", default=None, metavar="NAME", help="a run trained with --label: write documents in this label's style"
    )
    s.add_argument("--seed", type=flags.count, default=0, help="same seed, same text")
    s.add_argument("--stop", default=None, metavar="STRING", help="end a sample when it produces STRING")
    s.add_argument(
        "--no-mix",
        action="store_true",
        help="a run trained with --ngram-mix: sample from the model alone, not its mixture with the n-gram",
    )
    s.add_argument(
        "--show-probs",
        action="store_true",
        help="print the next character's most likely candidates after --prime at each --temperatures, instead of sampling",
    )
    s.add_argument(
        "--temperatures", default="0.2,0.5,1,1.5", metavar="T,T,...", help="temperatures for --show-probs (default 0.2,0.5,1,1.5)"
    )
    s.add_argument(
        "--clamp",
        default=None,
        metavar="LAYER:CELL=VALUE[,...]",
        help="hold cells at a value at every step (an LSTM's tanh(c), a GRU's or RNN's h; -1 to 1): "
        "steer the sample by a cell you found with charnn inspect",
    )
    s.add_argument("--checkpoint", type=flags.which, default="best", metavar="WHICH", help=flags.WHICH_HELP)
    s.add_argument(
        "--device", choices=flags.DEVICES, default="auto", help="where to run the model (default auto: a GPU if there is one)"
    )
    s.add_argument("--json", action="store_true", help="with --show-probs or documents: print one JSON object")

    s.set_defaults(func=cmd_sample)


def _add_eval_check_info(sub) -> None:
    e = sub.add_parser("eval", help="loss, bits per character and perplexity on a split or a file")
    e.add_argument("run", metavar="RUN_DIR")
    src = e.add_mutually_exclusive_group()
    src.add_argument("--split", choices=["train", "val", "test"], default=None, help="a split of the training text (default val)")
    src.add_argument("--text", metavar="FILE", default=None, help="any text file")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--checkpoint", type=flags.which, default="best", metavar="WHICH", help=flags.WHICH_HELP)
    e.add_argument(
        "--device", choices=flags.DEVICES, default="auto", help="where to run the model (default auto: a GPU if there is one)"
    )

    e.set_defaults(func=cmd_eval)

    c = sub.add_parser("check", help="verify a run directory's checkpoints and say which are usable")
    c.add_argument("run", metavar="RUN_DIR")

    c.set_defaults(func=cmd_check)

    i = sub.add_parser("info", help="configuration, vocabulary, size and progress of a run")
    i.add_argument("run", metavar="RUN_DIR")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.add_argument(
        "--checkpoint",
        type=flags.which,
        default=None,
        metavar="WHICH",
        help="the checkpoint to describe: best, last or step:N (default: last, else best)",
    )
    i.set_defaults(func=cmd_info)


def _add_model_flags(g) -> None:
    g.add_argument(
        "--cell",
        choices=list(CELLS),
        default=None,
        help="recurrent cell, or a decoder-only transformer (default lstm; --cell transformer starts from the gpt-cpu preset)",
    )
    g.add_argument("--layers", type=flags.count, default=None, help="number of stacked layers (or transformer blocks)")
    g.add_argument("--hidden", type=flags.count, default=None, help="cells per layer (recurrent cells)")
    g.add_argument(
        "--embed", type=flags.count, default=None, help="width of the learned character embedding (a transformer's width)"
    )
    g.add_argument("--heads", type=flags.count, default=None, help="a transformer's attention heads (must divide --embed)")
    g.add_argument(
        "--block",
        type=flags.count,
        default=None,
        help="a transformer's context length: its training windows and what it attends to",
    )
    g.add_argument("--dropout", type=flags.number, default=None, help="dropout between layers and before the read-out")
    g.add_argument(
        "--weight-drop",
        type=flags.number,
        default=None,
        metavar="F",
        help="DropConnect on the hidden-to-hidden weights, one mask per batch (AWD-LSTM; default 0)",
    )
    g.add_argument(
        "--embed-drop",
        type=flags.number,
        default=None,
        metavar="F",
        help="drop whole characters' embeddings, one mask per batch (default 0)",
    )
    g.add_argument(
        "--variational",
        type=flags.number,
        default=None,
        metavar="F",
        help="dropout with one mask per sequence on the recurrence's input and output (default 0)",
    )


def cmd_train(args) -> int:
    from charnn import api
    from charnn import checkpoint as ckpt
    from charnn.sample import sample_text

    given = {k: getattr(args, k) for k in CONFIG_FIELDS if getattr(args, k, None) is not None}
    progress = False if args.quiet else None
    # the Python API's train: one path from settings to a run for both
    if args.resume:  # what was given again is checked against the saved run (charnn.trainer.check_resume)
        run = api.train(
            args.text, args.out, preset=args.preset, resume=True, init_from=args.init_from, progress=progress, **given
        )
    else:
        run = api.train(args.text, args.out, preset=args.preset, init_from=args.init_from, progress=progress, **given)
    result = run.result
    assert result is not None  # api.train always reports how training ended

    code = 0
    if result.stopped_by == "interrupt":  # the shell's convention: 128 + the signal (Ctrl-C 130, SIGTERM 143)
        code = 128 + (result.signal or 2)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return code
    best, whole = result.best_val_loss, ""
    if result.best_val_loss_whole is not None:  # evaluations read --eval-chars; the report reads it all
        best, whole = result.best_val_loss_whole, f" (whole validation split, {result.val_chars:,} characters)"
    if result.units == "tokens":
        bpc = f"{result.best_bpc:.3f}" if result.best_bpc is not None else "?"
        said = f"{best:.4f} nats per token = {bpc} bits per character"
    else:
        said = f"{best:.4f} nats = {best / math.log(2):.3f} bits per character"
    # an empty validation split: evaluations read the training split (charnn.trainer.Trainer.evaluate)
    which = "best validation loss" if result.val_chars > 0 else "best loss on the training split (no validation split)"
    print(
        f"stopped by {result.stopped_by} after {result.steps} steps ({result.epoch:.2f} epochs); {which} {said}{whole}",
        file=sys.stderr,
    )
    if (mix := result.mixture) is not None:
        from charnn.study.mixture import FIT_CHARS

        part = f"of its first {FIT_CHARS:,} characters " if mix.chars > FIT_CHARS else ""  # the part it was fitted on
        print(
            f"mixed with its training text's {mix.order}-gram ({mix.describe()}): validation loss "
            f"{mix.loss:.4f} nats = {mix.loss / math.log(2):.3f} bits per character (the {mix.order}-gram alone "
            f"{mix.ngram_loss:.4f}; each half {part}at what was fitted on the other half {mix.cross_fitted_loss:.4f})",
            file=sys.stderr,
        )
    if args.samples and ckpt.load(result.run_dir, "best").meta.get("lead_in"):
        _final_documents(result.run_dir, args.samples)
    elif args.samples:
        loaded = ckpt.load(result.run_dir, "best")
        model = loaded.build_model("cpu")
        mix = result.mixture_sampler  # samples read as scored (None without --ngram-mix)
        for k, text in enumerate(
            sample_text(model, loaded.vocab, length=400, num=args.samples, seed=0, temperature=0.8, mix=mix)
        ):
            print(f"--- sample {k + 1} (temperature 0.8) ---", file=sys.stderr)
            print(text)
    print(f"run saved in {result.run_dir}; try: charnn sample {result.run_dir}", file=sys.stderr)
    return code


def cmd_sample(args) -> int:
    from charnn import checkpoint as ckpt
    from charnn.api import Model
    from charnn.devices import pick_device
    from charnn.sample import check_options, refuse_label_unless_labelled

    check_options(args.temperature, args.top_k, args.top_p, args.length, args.num)
    if args.prime_file is not None:
        args.prime = _prime_file(args)
    loaded = ckpt.load(args.run, args.checkpoint)
    # the Python API's Model: its sample gives the same text for the same settings and seed
    api_model = Model(loaded, pick_device(args.device), clamp=args.clamp)
    api_model.run_dir = Path(args.run) if Path(args.run).is_dir() else None  # where --ngram-mix keeps its mixture
    model = api_model.net
    opts = dict(
        prime=args.prime,
        length=args.length,
        seed=args.seed,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        stop=args.stop,
        clamped=api_model.clamped,
    )
    out = sys.stdout
    refuse_label_unless_labelled(loaded.meta, args.label, "--label")
    if args.beam is not None:
        return _beam(args, api_model)
    if args.show_probs:
        return _show_probs(args, api_model)
    if args.documents is not None or loaded.meta.get("lead_in"):
        return _sample_documents(args, model, loaded, opts)
    kw = {k: opts[k] for k in ("length", "seed", "temperature", "top_k", "top_p", "stop")} | {"mix": not args.no_mix}
    if args.num == 1:  # streamed as it is generated
        pieces = api_model.sample(args.prime, stream=True, **kw)  # a prime with unknown characters fails here
        out.write(args.prime)
        for piece in pieces:
            out.write(piece)
            out.flush()
        out.write("\n")
        return 0
    texts = api_model.sample(args.prime, num=args.num, **kw)
    out.write("\n----\n".join(args.prime + t for t in texts) + "\n")
    return 0


def _final_documents(run, n: int) -> None:
    """The end of a documents run: n whole documents, and how many of them the training split
    holds verbatim (the blog's names "that do not exist" are the others)."""
    from charnn import checkpoint as ckpt
    from charnn.documents import END, novelty
    from charnn.evaluate import model_text
    from charnn.sample import label_numbers, sample_documents

    loaded = ckpt.load(run, "best")
    model = loaded.build_model("cpu")
    names = loaded.meta.get("labels") or [None]
    docs: list[str] = []
    shown: list[str] = []
    capped = 0
    each = max(1, 20 // len(names[:n]))
    for name in names[:n]:  # a labelled run: documents of its first labels in turn
        label, lead = label_numbers(loaded.meta, name) if name else (0, 0)
        got, c = sample_documents(
            model, loaded.vocab, loaded.meta["lead_in"], each, cap=2000, temperature=0.8, label=label, lead_label=lead
        )
        docs, capped = docs + got, capped + c
        shown += [(f"[{name}] " if name else "") + d for d in got[: max(1, n // len(names[:n]))]]
    V = len(loaded.vocab)
    train_docs = loaded.vocab.decode(model_text(loaded, split="train", labelled_ok=True).ids % V).split(END)[:-1]
    new = novelty(docs, train_docs)
    print(
        f"--- {len(shown)} documents (temperature 0.8); of {len(docs)} drawn, {new:.0%} are not in the training split"
        + (f" ({capped} reached 2,000 characters unfinished)" if capped else "")
        + " ---",
        file=sys.stderr,
    )
    print("\n".join(shown[:n]))


MAX_PRIME_FILE = 1 << 20


def _prime_file(args) -> str:
    if args.prime:
        raise CharnnError("give --prime TEXT or --prime-file FILE, not both")
    path = Path(args.prime_file)
    if not path.exists():
        raise CharnnError(f"--prime-file {path}: no such file")
    if not path.is_file():  # a folder, or a device such as /dev/zero that would never end
        what = "a folder" if path.is_dir() else "not a regular file"
        raise CharnnError(f"--prime-file {path} is {what}; give a text file")
    if path.stat().st_size > MAX_PRIME_FILE:
        raise CharnnError(f"--prime-file {path} is over 1 MB; a prime that long adds nothing (give its last part)")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CharnnError(f"--prime-file {path} is not UTF-8 text") from None
    except OSError as e:
        raise CharnnError(f"--prime-file {path}: cannot read it ({e.strerror or e})") from None


def _beam(args, api_model) -> int:
    text, nats = api_model.beam(args.prime, width=args.beam, length=args.length, label=args.label, mix=not args.no_mix)
    if api_model.loaded.meta.get("lead_in"):  # the most likely whole document
        if text is None:
            raise CharnnError(f"--beam {args.beam}: no document ended within {args.length} units; give a larger --length")
        units = len(api_model.vocab.encode(text[len(args.prime) :])) + 1
        print(text)
        print(
            f"beam {args.beam}: log-likelihood {nats:.3f} nats over {units} units, the end symbol included "
            f"({-nats / units:.4f} nats per unit)",
            file=sys.stderr,
        )
        return 0
    print(args.prime + text)
    print(
        f"beam {args.beam}: log-likelihood{_mixed_with(None if args.no_mix else api_model.mixture())} {nats:.3f} "
        f"nats over {args.length} units "
        f"({(0.0 - nats) / max(args.length, 1):.4f} nats per unit)",
        file=sys.stderr,
    )
    return 0


def _sample_documents(args, model, loaded, opts) -> int:
    """charnn sample on a run trained with --documents: whole documents, one a line (a blank line
    between them when they span lines)."""
    from charnn.sample import MAX_NUM, label_numbers, sample_documents

    if args.stop:
        raise CharnnError("--stop: a document ends at its end symbol; drop --stop with --documents")
    num = args.num
    if args.documents is not None:  # --documents N says how many, as --num does
        if args.num not in (1, args.documents):
            raise CharnnError(f"--documents {args.documents} and --num {args.num}: give one of them")
        if not 1 <= args.documents <= MAX_NUM:
            raise CharnnError(f"--documents must be from 1 to {MAX_NUM:,} documents drawn together, got {args.documents:,}")
        num = args.documents
    docs, capped = sample_documents(
        model,
        loaded.vocab,
        loaded.meta.get("lead_in", ""),
        num,
        args.length,
        args.prime,
        args.seed,
        *label_numbers(loaded.meta, args.label),
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        clamped=opts["clamped"],
    )
    if args.json:
        print(strict_json({"documents": docs, "capped": capped}, ensure_ascii=False))
    else:
        if docs:
            sys.stdout.write(("\n\n" if any("\n" in d for d in docs) else "\n").join(docs) + "\n")
    if capped:
        print(
            f"{capped} document{'s' * (capped != 1)} reached --length {args.length} without ending and "
            f"{'were' if capped != 1 else 'was'} drawn again"
            + (f"; {len(docs)} of {num} complete: raise --length" if len(docs) < num else ""),
            file=sys.stderr,
        )
    return 0


def _mixed_with(sampler) -> str:
    """' of the model mixed with its N-gram' when sample reads a --ngram-mix run's mixture (sampler), else ''."""
    return f" of the model mixed with its {sampler.mixture.order}-gram" if sampler is not None else ""


def _show_probs(args, api_model) -> int:
    from charnn.sample import next_probs
    from charnn.subject import display_chars

    loaded = api_model.loaded

    try:
        temps = [float(x) for x in args.temperatures.split(",")]
    except ValueError:
        raise CharnnError(f"--temperatures {args.temperatures!r}: give numbers separated by commas, e.g. 0.2,0.5,1") from None
    if not temps or any(not math.isfinite(t) or t < 0 or t > 100 for t in temps):
        raise CharnnError(f"--temperatures {args.temperatures!r}: each must be from 0 (argmax) to 100")
    mix = None if args.no_mix else api_model.mixture()
    got = next_probs(
        api_model.net,
        loaded.vocab,
        args.prime,
        temps,
        top=10,
        clamped=api_model.clamped,
        meta=loaded.meta,
        label=args.label,
        mix=mix,
    )
    shown = display_chars(loaded.vocab)
    name = {"\n": "\\n", "\t": "\\t", " ": "' '"}
    if args.json:
        print(
            strict_json(
                {
                    "prime": args.prime,
                    "candidates": [shown[i] for i in got["candidates"]],
                    "probs": {f"{t:g}": p for t, p in got["probs"].items()},
                    "mixed": mix is not None,
                },
                ensure_ascii=False,
            )
        )
        return 0
    width = 12
    tokens = loaded.vocab.unit == "bpe"

    def label(s: str) -> str:
        return name.get(s, s) if len(s) == 1 and not tokens else repr(s)

    col = max(6, *(len(label(shown[i])) for i in got["candidates"]))
    print(
        f"the next {'token' if tokens else 'character'} after {args.prime[-30:]!r}: probability at each "
        f"temperature{_mixed_with(mix)} (softmax({'log P' if mix is not None else 'logits'} / T))"
    )
    print(f"{'':>{col}}" + "".join(f"  {f'T={t:g}':<{width + 6}}" for t in temps))
    for k, i in enumerate(got["candidates"]):
        cells = []
        for t in temps:
            p = got["probs"][t][k]
            full, part = divmod(round(p * width * 8), 8)
            bar = "\u2588" * full + (" \u258f\u258e\u258d\u258c\u258b\u258a\u2589"[part] if part else "")
            cells.append(f"  {p:5.3f} {bar:<{width}}")
        print(f"{label(shown[i]):>{col}}" + "".join(cells))
    return 0


def cmd_eval(args) -> int:
    from charnn import checkpoint as ckpt
    from charnn.devices import pick_device
    from charnn.evaluate import model_text, score_text

    loaded = ckpt.load(args.run, args.checkpoint)
    model = loaded.build_model(pick_device(args.device))
    scored = model_text(loaded, args.text, args.split, labelled_ok=True)
    ids, what = scored.ids, scored.what
    if len(ids) < 2:
        raise CharnnError(f"{what} holds fewer than 2 characters; nothing to score")
    score = score_text(model, loaded.vocab, ids)
    if not math.isfinite(score.loss):
        raise CharnnError(
            f"the model's loss on {what} is {score.loss} (its outputs overflow); the checkpoint is "
            f"unusable for scoring: use another one (charnn check {args.run})"
        )
    mix = None  # the run's --ngram-mix mixture, fitted for its best checkpoint
    if args.checkpoint == "best" and score.tokens is None:
        from charnn.study.mixture import sampler_for

        sampler = sampler_for(loaded, Path(args.run))
        if sampler is not None:
            mix, score.mixture = sampler.mixture, sampler.scored(model, ids)
    if args.json:
        print(strict_json(score.to_dict()))
    else:
        if score.tokens is not None:
            print(
                f"{what}: {score.tokens:,} tokens ({score.chars:,} characters)  loss {score.loss:.4f} nats/token  "
                f"{score.loss_per_char:.4f} nats/char  {score.bpc:.4f} bits/char  perplexity {score.perplexity:.3f} "
                f"per token"
            )
        else:
            print(
                f"{what}: {score.chars:,} characters  loss {score.loss:.4f} nats  "
                f"{score.bpc:.4f} bits/char  perplexity {score.perplexity:.3f}"
            )
        if mix is not None and score.mixture is not None:
            loss = score.mixture["loss"]
            print(
                f"mixed with its training text's {mix.order}-gram ({mix.describe()}): loss {loss:.4f} nats  "
                f"{loss / math.log(2):.4f} bits/char  perplexity {math.exp(loss):.3f}"
            )
    return 0


def cmd_info(args) -> int:
    from charnn import checkpoint as ckpt

    path = ckpt.resolve_path(args.run, args.checkpoint or "latest")
    loaded = ckpt.load(path)
    best = ckpt.load(args.run, "best") if Path(args.run).is_dir() and (Path(args.run) / ckpt.BEST).exists() else None
    model = loaded.build_model("cpu")
    m = loaded.meta
    info: dict[str, Any] = {
        "checkpoint": str(path),
        "config": loaded.config.to_dict(),
        "vocab_size": len(loaded.vocab),
        "unit": loaded.vocab.unit,
        "params": model.num_params,
        "steps": m.get("step"),
        "best_val_loss": (best.meta.get("val_loss") if best else m.get("best_val_loss", m.get("val_loss"))),
        "best_step": best.meta.get("step") if best else None,
        "stopped_by": m.get("stopped_by"),
        "kept_steps": ckpt.kept_steps(args.run) if Path(args.run).is_dir() else [],
    }
    if args.json:
        print(strict_json(info))
        return 0
    c = loaded.config
    print(f"run        {args.run}")
    shape = (
        f"{c.model.cell} {c.model.layers} layers x {c.model.hidden} cells, embedding {c.model.embed}"
        if c.model.recurrent
        else c.model.describe()
    )
    print(f"model      {shape}, dropout {c.model.dropout}: {model.num_params:,} parameters")
    units = {"char": "characters", "bytes": "bytes", "bpe": "byte-pair tokens"}[loaded.vocab.unit]
    print(f"vocabulary {len(loaded.vocab)} {units}")
    print(f"data       {c.data.text} split {','.join(f'{x:g}' for x in c.data.split)}")
    print(
        f"training   {c.train.optimizer}{' per gate' * (c.train.optimizer == 'muon' and c.train.muon_gates)} "
        f"lr {c.train.lr:g} ({c.train.schedule}), batch {c.train.batch_size} x "
        f"seq {c.train.seq_len}; preset {c.preset or '-'}"
    )
    if info["steps"] is not None:
        print(f"progress   {info['steps']} steps, stopped by {info['stopped_by'] or '-'}")
    if info["kept_steps"]:
        print(f"kept       weights at steps {', '.join(map(str, info['kept_steps']))} (--checkpoint step:N)")
    bv = info["best_val_loss"]
    if bv is not None and math.isfinite(bv):
        print(f"best val   {bv:.4f} nats = {bv / math.log(2):.4f} bits/char (step {info['best_step']})")
    return 0


def cmd_check(args) -> int:
    from charnn.checkpoint import check_run

    found = check_run(args.run)
    width = max(len(f.name) for f in found)
    for f in found:
        status = "ok" if f.ok else "missing" if f.says == "missing" else "PROBLEM"
        print(f"{f.name:<{width}}  {status:<7}  {f.says if status != 'missing' else ''}".rstrip())
    bad = [f for f in found if not f.ok and f.says != "missing"]
    usable = [f.name for f in found if f.ok and f.name.endswith(".safetensors")]
    print(
        f"{args.run}: "
        + ("every file checks out" if not bad else f"{len(bad)} problem(s)")
        + (f"; usable: {', '.join(usable)}" if usable else "; no usable checkpoint")
    )
    return 0 if not bad and usable else 1
