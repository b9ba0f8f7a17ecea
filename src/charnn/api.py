"""charnn from Python: train a run, load a model, sample, score and look inside it.

    import charnn
    run = charnn.train("stdlib", "runs/first", max_time=30)
    model = run.load()
    print(model.sample(length=200, seed=0)[0])
    model.score("The quick brown fox.").bpc
    cells = model.cells(open("some.txt").read())   # arrays; in Jupyter, the cells page
    top = model.find(text)[0].top[0]               # the cell most like the first feature
    model.clamp({(top.layer, top.cell): 0.9}).sample(length=200)
    model.attention(text).ranking                  # a transformer: its heads, ranked by what they attend to
    model.context().report.context                 # the paper's analyses (errors, braces, dynamics, ...)

The command line calls these functions (``charnn train``, ``sample``, ``analyze ...``), so the two give
the same text and numbers for the same settings and seeds. Bad input raises ``CharnnError``
with the same one-line message the command line prints.
"""

from __future__ import annotations

import dataclasses
import html
import io
import math
import numbers
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from charnn.config import RENAMED, DataConfig, ModelConfig, RunConfig, TrainConfig, apply_preset
from charnn.errors import CharnnError

if TYPE_CHECKING:  # the trainer loads torch and more: imported when train() runs
    from charnn.trainer import TrainResult

__all__ = ["CharnnError", "Run", "Model", "Cells", "Attention", "Analysis", "train", "load", "build_config"]

# setting name -> the config section that holds it: every field of the three sections but those
# the data fills in (the text is train's first argument)
SETTINGS = {
    f.name: section
    for section, kind in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig))
    for f in dataclasses.fields(kind)
    if f.name not in ("text", "vocab_size", "labels")
}


def _check_type(name: str, value, default) -> None:
    """A setting's value has its field's type (an int is a fine float; a bool is no number)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and (isinstance(value, int) or not isinstance(default, int))
            and math.isfinite(value)
        )
    elif isinstance(default, tuple):
        ok = isinstance(value, (tuple, list)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise CharnnError(f"setting {name}={value!r}: expected {type(default).__name__} like {default!r}")


def _need(kind: str, optional: bool = False, **args) -> None:
    """A method's arguments have the kind it reads ("text", "whole number" or "number"; a bool is
    no number, numpy's numbers are): one line naming the argument, not a TypeError from deep inside."""
    for name, value in args.items():
        if value is None and optional:
            continue
        if kind == "text":
            ok = isinstance(value, str)
        else:
            ok = isinstance(value, numbers.Integral if kind == "whole number" else numbers.Real) and not isinstance(value, bool)
        if not ok:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise CharnnError(f"{name}={shown}: expected {'a ' if kind != 'text' else ''}{kind}{' or None' * optional}")


def build_config(text: str | Path = "stdlib", preset: str | None = None, **settings) -> RunConfig:
    """A run's configuration: the preset (default "default"; "gpt-cpu" when cell="transformer"),
    then the settings (names of ``ModelConfig``, ``DataConfig`` and ``TrainConfig`` fields), then
    the rules that tie a transformer's width and windows to its embedding and block. Checked when
    training starts (``RunConfig.validate``).

        cfg = charnn.build_config("notes.txt", preset="large", dropout=0.3)
        cfg.model.describe()
    """
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown and unknown[0] in RENAMED:
        raise CharnnError(f"the setting {unknown[0]!r} is now called {RENAMED[unknown[0]]!r}")
    if unknown:
        raise CharnnError(
            f"unknown setting {unknown[0]!r}: the settings are the fields of ModelConfig, DataConfig "
            f"and TrainConfig (e.g. {', '.join(list(SETTINGS)[:6])}, ...)"
        )
    cfg = RunConfig()
    apply_preset(cfg, preset or ("gpt-cpu" if settings.get("cell") == "transformer" else "default"))
    path = Path(text).expanduser()
    cfg.data.text = str(path.resolve()) if path.exists() else str(text)
    for k, v in settings.items():
        section = getattr(cfg, SETTINGS[k])
        _check_type(k, v, getattr(section, k))
        setattr(section, k, tuple(v) if isinstance(v, list) else v)
    _transformer_defaults(cfg, settings)
    if "muon_ns_steps" in settings and cfg.train.optimizer != "muon":  # a preset's own value is no request
        raise CharnnError(
            f"--muon-ns-steps sets Muon's iterations, and this run trains with --optimizer {cfg.train.optimizer}: "
            "add --optimizer muon, or drop --muon-ns-steps"
        )
    if settings.get("muon_gates") and cfg.train.optimizer != "muon":
        raise CharnnError(
            f"--muon-gates sets how Muon steps the recurrent matrices, and this run trains with --optimizer "
            f"{cfg.train.optimizer}: add --optimizer muon, or drop --muon-gates"
        )
    return cfg


def _transformer_defaults(cfg: RunConfig, given: dict) -> None:
    """A transformer's windows are its block and its width is its embedding: block alone sets the
    windows, embed alone the width; a recurrent preset's other settings are refused by validate."""
    m = cfg.model
    if m.recurrent:
        return
    if "hidden" in given and given["hidden"] != m.embed:
        raise CharnnError(f"--hidden is a recurrent cell's width; a transformer's width is --embed ({m.embed}): drop --hidden")
    m.hidden = m.embed
    if "block" in given and "seq_len" not in given:
        cfg.train.seq_len = m.block


@dataclass
class Run:
    """A training run on disk and how its training ended."""

    dir: Path
    steps: int
    epochs: float
    stopped_by: str  # max-steps, max-time, max-epochs, patience, interrupt, ...
    best_val_loss: float  # nats per unit (character or token) on the validation split
    best_bpc: float | None  # bits per character of the same (None when unmeasured)
    result: TrainResult | None = field(default=None, repr=False)  # everything the trainer reported (signal, ...)

    def load(self, checkpoint: str = "best", device: str = "cpu") -> Model:
        """The run's model: checkpoint "best", "last" or "step:N" (a kept one).

        model = run.load("last")
        """
        return load(self.dir, checkpoint, device)

    def __repr__(self) -> str:
        bpc = f", {self.best_bpc:.3f} bits/char" if self.best_bpc is not None else ""
        return f"Run({str(self.dir)!r}: {self.steps} steps, stopped by {self.stopped_by}{bpc})"


def train(
    text: str | Path | None = None,
    out: str | Path = "runs/charnn",
    *,
    preset: str | None = None,
    resume: bool = False,
    init_from: str | Path | None = None,
    progress: bool | None = None,
    **settings,
) -> Run:
    """Train a model on a text file, a folder or a built-in corpus ("stdlib", the default, or
    "shakespeare"), or continue the run in `out` (resume=True: the text, preset and settings given
    again must match the run's, but for those a resume may change).

    settings: any field of ModelConfig, DataConfig or TrainConfig, e.g. ``cell="gru"``,
    ``hidden=256``, ``max_time=30`` (seconds), ``max_steps=500``, ``lr=3e-3``. progress: a bar
    (True), none (False) or a bar only on a terminal or in a notebook (None).

        run = charnn.train("notes.txt", "runs/notes", max_time=60)
        run.best_bpc
    """
    from charnn.trainer import train as train_run

    if resume:
        asked = dict(settings)
        if text is not None:
            path = Path(text).expanduser()
            asked["text"] = str(path.resolve()) if path.exists() else str(text)
        if preset is not None:
            asked["preset"] = preset
        if init_from:
            asked["init_from"] = str(Path(init_from).resolve())
        res = train_run(None, out, resume=True, overrides=asked, progress=progress)
    else:
        cfg = build_config("stdlib" if text is None else text, preset, **settings)
        if init_from and any(SETTINGS[k] == "model" for k in settings):
            raise CharnnError(
                "--init-from takes the model's shape and dropouts from that run; drop --cell/--layers/"
                "--hidden/--embed/--dropout/--weight-drop/--embed-drop/--variational"
            )
        res = train_run(cfg, out, init_from=init_from, progress=progress)
    if res.stopped_by != "interrupt" and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 fits it
        from charnn.study.mixture import fit_run

        res.mixture, res.mixture_sampler = fit_run(res.run_dir) or (None, None)  # --ngram-mix (None without it)
    best = res.best_val_loss_whole if res.best_val_loss_whole is not None else res.best_val_loss
    bpc = res.best_bpc if res.best_bpc is not None else (best / math.log(2) if res.units != "tokens" else None)
    return Run(Path(res.run_dir), res.steps, res.epoch, res.stopped_by, best, bpc, res)


def load(run: str | Path, checkpoint: str = "best", device: str = "cpu") -> Model:
    """A trained model from a run directory (checkpoint "best", "last" or "step:N") or a
    .safetensors file; device "cpu", "cuda", "mps" or "auto".

        model = charnn.load("runs/demo")              # its best checkpoint
        early = charnn.load("runs/demo", "step:300")  # one it kept over training
    """
    from charnn import checkpoint as ckpt
    from charnn.devices import pick_device

    model = Model(ckpt.load(run, checkpoint), pick_device(device))
    model.run_dir = Path(run) if Path(run).is_dir() else None
    return model


class Model:
    """A trained model and its vocabulary, ready to sample, score and inspect (eval mode)."""

    def __init__(self, loaded, device="cpu", *, net=None, clamp: str | None = None):
        """loaded: a ``checkpoint.Checkpoint``; net: its model already built (else built on
        `device`); clamp: "LAYER:CELL=VALUE,..." held while sampling (see ``clamp``)."""
        from charnn.sample import parse_clamp

        self.loaded = loaded
        self.net = net if net is not None else loaded.build_model(device)
        self.vocab = loaded.vocab
        self.config: ModelConfig = loaded.config.model
        self.clamped = parse_clamp(clamp, self.config)
        self._clamped = clamp or ""
        self.run_dir: Path | None = None  # the run folder it was loaded from (None: a lone checkpoint file)

    @property
    def labels(self) -> list[str]:
        """The label names of a run trained with --label (else empty)."""
        return list(self.loaded.meta.get("labels") or [])

    @property
    def params(self) -> int:
        """The number of trained parameters."""
        return self.net.num_params

    def __repr__(self) -> str:
        held = f", clamped {self._clamped}" if self._clamped else ""
        return f"Model({self.config.describe()}, {self.params:,} parameters, {len(self.vocab)} symbols{held})"

    def mixture(self):
        """A ``study.mixture.Sampler`` when this is the best checkpoint of a run trained with --ngram-mix
        (its n-gram counted once, on first use), else None."""
        from charnn import checkpoint as ckpt
        from charnn.study.mixture import sampler_for

        path = self.loaded.path
        if self.run_dir is None or path is None or Path(path).name != ckpt.BEST:
            return None
        if not hasattr(self, "_mixture"):
            self._mixture = sampler_for(self.loaded, self.run_dir)
        return self._mixture

    # ---- generating ----------------------------------------------------------------------------

    def sample(
        self,
        prime: str = "",
        *,
        length: int = 500,
        num: int = 1,
        temperature: float = 0.8,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: str | None = None,
        label: str | None = None,
        stream: bool = False,
        mix: bool = True,
    ) -> list[str] | Iterator[str]:
        """`num` samples (without the prime), each `length` units long or cut after `stop`; the
        same seed gives the same text. stream=True (num 1): the pieces of one sample as they are
        written. A run trained with --documents gives whole documents instead (`length` caps one,
        `label` picks a labelled run's style; ``documents`` says how many were cut off). The best
        checkpoint of a run trained with --ngram-mix samples from its mixture unless mix=False.

            model.sample("ROMEO:", length=300, temperature=0.5, seed=1)[0]
        """
        from charnn.sample import (
            check_options,
            label_numbers,
            refuse_label_unless_labelled,
            sample_documents,
            sample_text,
            stream_document,
        )
        from charnn.sample import stream as stream_pieces

        _need("text", prime=prime)
        _need("text", optional=True, stop=stop, label=label)
        _need("whole number", length=length, num=num, top_k=top_k, seed=seed)
        _need("number", temperature=temperature, top_p=top_p)
        check_options(temperature, top_k, top_p, length, num)
        opts: dict[str, Any] = dict(temperature=temperature, top_k=top_k, top_p=top_p, clamped=self.clamped)
        meta = self.loaded.meta
        refuse_label_unless_labelled(meta, label)
        if meta.get("lead_in"):
            if stop:
                raise CharnnError("stop: a document ends at its end symbol; drop stop for a documents run")
            if stream:
                return stream_document(self.net, self.vocab, meta, label, prime, length, seed, **opts)
            docs, _ = sample_documents(
                self.net, self.vocab, meta["lead_in"], num, length, prime, seed, *label_numbers(meta, label), **opts
            )
            return docs
        if mix:
            opts["mix"] = self.mixture()
        if stream:
            if num != 1:
                raise CharnnError("stream=True writes one sample: drop num or set it to 1")
            return stream_pieces(self.net, self.vocab, prime, length, seed, stop=stop, **opts)
        return sample_text(self.net, self.vocab, length=length, num=num, stop=stop, prime=prime, seed=seed, **opts)

    def beam(
        self, prime: str = "", *, width: int = 4, length: int = 200, label: str | None = None, mix: bool = True
    ) -> tuple[str | None, float]:
        """The most likely continuation of `prime` (without it) that a beam of `width` finds, and
        its log-likelihood in nats; width 1 is greedy, a wider beam never scores below greedy. A
        run trained with --documents: the most likely whole document (with the prime in front, as
        ``sample`` gives them; `length` caps it, None when no document ends within it). The best
        checkpoint of a run trained with --ngram-mix searches its mixture unless mix=False.

            text, nats = model.beam("ROMEO:", width=8, length=100)
        """
        from charnn.sample import beam_document, beam_search, refuse_label_unless_labelled

        _need("text", prime=prime)
        _need("text", optional=True, label=label)
        _need("whole number", width=width, length=length)
        meta = self.loaded.meta
        refuse_label_unless_labelled(meta, label)
        if meta.get("lead_in"):
            return beam_document(self.net, self.vocab, meta, label, prime, length, width, self.clamped)
        return beam_search(self.net, self.vocab, prime, length, width, self.clamped, mix=self.mixture() if mix else None)

    def next(
        self, prime: str, temperatures=(0.2, 0.5, 1.0, 1.5), top: int = 10, label: str | None = None, mix: bool = True
    ) -> dict[float, dict[str, float]]:
        """The next character's most likely candidates after `prime` at each temperature:
        {T: {character: probability}}, most likely first. A run of documents reads `prime` where
        a document starts (as sampling does), in `label`'s style for a run trained with labels.
        The best checkpoint of a run trained with --ngram-mix gives its mixture's unless mix=False.

            model.next("Hello worl")[1.0]   # {'d': 0.97, ...}
        """
        from charnn.sample import next_probs
        from charnn.subject import display_chars

        _need("text", prime=prime)
        _need("text", optional=True, label=label)
        _need("whole number", top=top)
        if isinstance(temperatures, (str, bytes)) or not hasattr(temperatures, "__iter__"):
            raise CharnnError(f"temperatures={temperatures!r}: expected a list of numbers, e.g. (0.5, 1.0)")
        _need("number", **{f"temperatures[{i}]": t for i, t in enumerate(temperatures)})
        if not temperatures or any(not math.isfinite(t) or t < 0 or t > 100 for t in temperatures):
            raise CharnnError(f"temperatures {temperatures!r}: each must be from 0 (argmax) to 100")
        got = next_probs(
            self.net,
            self.vocab,
            prime,
            temperatures,
            top=top,
            clamped=self.clamped,
            meta=self.loaded.meta,
            label=label,
            mix=self.mixture() if mix else None,
        )
        shown = display_chars(self.vocab)
        return {t: dict(zip((shown[i] for i in got["candidates"]), p)) for t, p in got["probs"].items()}

    def clamp(self, cells: dict | str) -> Model:
        """This model with cells held at values at every step, for sampling: {(layer, cell):
        value} or "LAYER:CELL=VALUE,...", on the scale the pages show (an LSTM's tanh(c) strictly
        between -1 and 1, a GRU's or RNN's h, a transformer's MLP neuron). The weights are shared.

            model.clamp({(0, 42): 0.9}).sample(length=300)
        """
        if not isinstance(cells, (str, dict)):
            raise CharnnError(f"cells={cells!r:.40}: expected {{(layer, cell): value, ...}} or 'LAYER:CELL=VALUE,...'")
        for k, v in cells.items() if isinstance(cells, dict) else ():
            if not (isinstance(k, tuple) and len(k) == 2):
                raise CharnnError(f"cells: the key {k!r:.40} is not a (layer, cell) pair")
            _need("whole number", layer=k[0], cell=k[1])
            _need("number", value=v)
        spec = cells if isinstance(cells, str) else ",".join(f"{a}:{b}={float(v)!r}" for (a, b), v in cells.items())
        held = Model(self.loaded, net=self.net, clamp=spec)
        held.run_dir = self.run_dir
        return held

    # ---- measuring -----------------------------------------------------------------------------

    def score(self, text: str, *, mix: bool = True):
        """Loss, bits per character and perplexity of `text` (read as ``charnn eval --text``
        reads a file of it): a ``Score`` with .loss, .bpc, .perplexity, .chars; for the best
        checkpoint of a run trained with --ngram-mix (unless mix=False) also .mixture, a dict with
        its mixture's "loss" on the text (and "order", "kind", "weight", "powers"), as eval reports it.

            model.score("To be, or not to be").bpc
        """
        from charnn.evaluate import score_text, string_ids

        _need("text", text=text)
        ids = string_ids(self.loaded, text)
        if len(ids) < 2:
            raise CharnnError("the text holds fewer than 2 characters; nothing to score")
        got = score_text(self.net, self.vocab, ids)
        sampler = self.mixture() if mix and got.tokens is None else None
        if sampler is not None:
            got.mixture = sampler.scored(self.net, ids)
        return got

    def _subject(self, text: str, what: str = "the text"):
        from charnn.subject import subject_of_string

        _need("text", text=text)
        return subject_of_string(self.loaded, self.net, text, what)

    def cells(self, text: str, quantities=None) -> Cells:
        """Every unit's value while the model reads `text` (one exact pass from the start):
        ``Cells`` of numpy arrays (layers, characters, units) per quantity; in Jupyter it shows
        the cells page.

            c = model.cells(text); c["c"][0, :, 42]   # layer 0, cell 42's tanh(c) over the text
        """
        from charnn.inspect.activations import QUANTITIES, record_all

        subject = self._subject(text)
        qs = tuple(quantities or QUANTITIES[self.config.cell])
        bad = [q for q in qs if q not in QUANTITIES[self.config.cell]]
        if bad:
            raise CharnnError(
                f"quantities: {bad[0]!r} is not one of this {self.config.cell}'s ({', '.join(QUANTITIES[self.config.cell])})"
            )
        chunk = record_all(self.net, subject.ids, qs)
        return Cells(subject.text, {q: chunk.acts[q].cpu().numpy() for q in qs}, subject)

    def find(self, text: str, features=(), top: int = 5):
        """The cells (MLP neurons, for a transformer) whose values correlate most with each
        feature of `text` (quotes, brackets, line position, ... and `features`, "NAME=REGEX"):
        a list of results, each with .name, .about and .top (layer, cell, quantity, r), best
        first.

            best = model.find(text, top=3)[0]   # the first feature: best.name, best.top[0].cell
        """
        from charnn.inspect import find_cells
        from charnn.subject import require_characters

        require_characters(self.loaded, "find")
        _need("whole number", top=top)
        return find_cells(self._subject(text), list(features), top=max(1, top))

    def ablate(self, text: str, cells=(), heads=(), mode: str = "zero", features=()):
        """How much the loss on `text` rises when `cells` [(layer, cell), ...] are held at zero
        (mode "zero", "mean" or "value:V") or a transformer's `heads` [(layer, head), ...] are
        silenced: a report with .overall (.base, .ablated, .delta) and per-feature splits.

            model.ablate(text, cells=[(0, 42)]).overall.delta   # nats per character lost without cell 42
        """
        from charnn.inspect import ablate, parse_cells
        from charnn.subject import require_characters

        require_characters(self.loaded, "ablate")
        c = self.config
        spec = ",".join(f"{a}:{b}" for a, b in cells)
        hspec = ",".join(f"{a}:{b}" for a, b in heads)
        if heads and c.recurrent:
            raise CharnnError(f"heads: only a transformer has heads; this model is a {c.describe()}")
        if not spec and not hspec:
            raise CharnnError("say what to silence: cells=[(layer, cell), ...] (or a transformer's heads)")
        chosen = parse_cells(spec, c.layers, c.units, "cells") if spec else []
        silenced = parse_cells(hspec, c.layers, c.heads, "heads", "heads") if hspec else []
        return ablate(self._subject(text), chosen, mode, list(features), heads=silenced)

    def attention(self, text: str, top: int = 3) -> Attention:
        """A transformer's attention while it reads `text`: every head's weights over the characters
        before each one, and the heads ranked by what they attend to (the previous character, the
        line's start, the matching opener, copying), as ``charnn inspect attention`` ranks them.

            a = model.attention(text); a.ranking[0].top[0]   # the head that most follows the previous character
            a.weights[0, 1, 40, 1]                           # layer 0, head 1: character 40's weight on 39
        """
        from charnn.inspect.attention import rank_heads, read_attention

        _need("whole number", top=top)
        subject = self._subject(text)
        a = read_attention(subject)  # a recurrent model: one line naming inspect cells
        return Attention(a.text, a.att, a.context, rank_heads(a, max(1, top)), subject, max(1, top))

    # ---- the paper's analyses (charnn analyze ...) --------------------------------------------

    @property
    def name(self) -> str:
        """The run's folder name (or the checkpoint file's), as plots title it."""
        if self.run_dir is not None:
            return Path(self.run_dir).resolve().name
        return Path(self.loaded.path).stem if self.loaded.path else "model"

    def _read(self, what: str, text: str | None, split: str, chars: int):
        """The subject of an analysis that sets n-gram models of characters beside the model: a
        string, or the first `chars` characters of a split of the run's corpus."""
        from charnn.evaluate import require_unlabelled
        from charnn.subject import require_characters, subject_of_split, subject_of_string

        require_characters(self.loaded, what)
        require_unlabelled(self.loaded)
        _need("text", optional=True, text=text)
        _need("whole number", chars=chars)
        if text is not None:
            return subject_of_string(self.loaded, self.net, text[:chars] if chars else text)
        return subject_of_split(self.loaded, self.net, split, chars)

    def _kept_run(self, what: str) -> Path:
        if self.run_dir is None:
            raise CharnnError(f"{what} reads the run's kept checkpoints: load the model from its run folder (charnn.load(RUN))")
        return Path(self.run_dir)

    def errors(
        self, text: str | None = None, *, split: str = "test", chars: int = 100_000, baseline=None, compare=None
    ) -> Analysis:
        """Where the model's errors (characters given p < 0.5) come from, the paper's oracles peeled
        in order (``charnn analyze errors``) on `text` or the first `chars` of `split`. baseline:
        an n-gram order (1-30, trained on the run's training split) or a file from ``charnn ngram
        --save``; compare: another Model (or run folder) on the same text. Either one says how
        many of each category's errors it gets right.

            model.errors().report.share("n-gram")     # the share of errors a 1-9-gram gets right
        """
        from charnn.study import oracles

        if baseline is not None and compare is not None:
            raise CharnnError("give baseline or compare, not both")
        order: int | str = 0
        if baseline is not None:
            if isinstance(baseline, (str, Path)) and Path(baseline).is_file():
                order = str(baseline)
            elif str(baseline).isdigit() and 1 <= int(baseline) <= 30:
                order = int(baseline)
            else:
                raise CharnnError(f"--baseline {baseline!r}: give a file saved by `charnn ngram --save` or an order 1-30")
        subject = self._read("charnn analyze errors", text, split, chars)
        other, label = None, f"the n-gram {baseline}" if order else ""
        if compare is not None:
            other_model = compare if isinstance(compare, Model) else load(compare)
            other, label = other_model._read("charnn analyze errors", text, split, chars), other_model.name
        rep = oracles.analyze_errors(subject, other, order)
        title = f"errors of {self.name}: {rep.errors:,} of {rep.chars:,} characters"
        return Analysis(
            "errors",
            rep,
            subject.what,
            lambda f: oracles.plot(rep, f, title, label),
            lambda out: oracles.write(rep, out, title, label),
        )

    def braces(self, text: str | None = None, *, split: str = "test", chars: int = 0, order: int = 20, ngram=None) -> Analysis:
        """The loss on each '}' by how far back its '{' is, the model against an n-gram model of
        `order` (trained on the run's training split) or the one saved in `ngram`
        (``charnn analyze braces``): for a model of code.

            model.braces().report.rows   # (from, to, braces, model's loss, n-gram's loss) per distance
        """
        from charnn.study import braces

        if not 1 <= order <= 30:
            raise CharnnError(f"--order must be between 1 and 30, got {order}")
        subject = self._read("charnn analyze braces", text, split, chars)
        rep = braces.brace_losses(subject, order, ngram)
        title = f"'}}' after its '{{': {self.config.describe()} vs {rep.order}-gram, {rep.braces:,} braces"
        return Analysis(
            "braces", rep, subject.what, lambda f: braces.plot(rep, f, title), lambda out: braces.write(rep, out, title)
        )

    def context(
        self,
        *,
        split: str = "val",
        chars: int = 50_000,
        positions: int = 2000,
        max_context: int = 1024,
        orders="1-9",
        progress=None,
    ) -> Analysis:
        """The loss when the model may read only the last k characters (k = 1, 2, 4, ...
        `max_context`), at `positions` characters of `split`, beside n-gram models of `orders`
        ("1-9", "1,2,4" or a list): how much context it uses (``charnn analyze context``).
        progress: called with a line as each part starts (e.g. print).

            [c["loss"] for c in model.context().report.context]   # by k
        """
        from charnn.study.context import context_use, plot, write

        rep = context_use(self.loaded, self.net, split, chars, positions, max_context, _orders(orders), progress)
        title = f"{self.name}: loss by context length ({rep.positions:,} characters of {split})"
        return Analysis("context", rep, rep.what, lambda f: plot(rep, f, title), lambda out: write(rep, out, title))

    def dynamics(self, *, split: str = "val", chars: int = 20_000, orders="1-9", progress=None) -> Analysis:
        """Each checkpoint the run kept over training against n-gram models of `orders`: which
        order it predicts like as it learns (``charnn analyze dynamics``). Reads the run folder
        this model was loaded from.

            [c["closest_order"] for c in model.dynamics().report.checkpoints]
        """
        from charnn.study.dynamics import dynamics, plot, write

        rep = dynamics(self._kept_run("charnn analyze dynamics"), _orders(orders), split, chars, progress=progress)
        title = f"{self.name}: divergence from n-gram models over training ({rep.chars:,} characters of {split})"
        return Analysis("dynamics", rep, rep.what, lambda f: plot(rep, f, title), lambda out: write(rep, out, title))

    def emergence(
        self,
        *,
        split: str = "val",
        chars: int = 20_000,
        features=(),
        feature_file: str | Path | None = None,
        parts: str | None = None,
        progress=None,
    ) -> Analysis:
        """Per kept checkpoint and feature (quotes, brackets, ... and `features`, "NAME=REGEX"):
        the best single cell's |r| and a linear probe's score, so when interpretable cells
        emerge (``charnn analyze emergence``). feature_file: lines "START LABEL" (character
        offsets); parts: a regex whose matches start new parts. Reads the run folder this model
        was loaded from. No picture: ``.report.first_steps(name)`` says when each appears.

            model.emergence().report.first_steps("quotes")   # (probe's first step, a single cell's)
        """
        from charnn.study.emergence import emergence, write

        run = self._kept_run("charnn analyze emergence")
        ff = str(feature_file) if feature_file is not None else None
        rep = emergence(run, split, chars, list(features), ff, progress=progress, parts=parts)
        return Analysis("emergence", rep, rep.what, None, lambda out: write(rep, out))


def _orders(orders) -> list[int]:
    from charnn.study.dynamics import parse_orders

    return parse_orders(orders if isinstance(orders, str) else ",".join(str(int(n)) for n in orders))


class Analysis:
    """One of the paper's analyses of a model (``Model.errors``, ``braces``, ``context``,
    ``dynamics``, ``emergence``): ``report`` holds its numbers (what ``charnn analyze NAME``
    prints), ``to_dict()`` them as plain data, ``png()`` its plot and ``save(folder)`` writes
    NAME.png and NAME.csv (emergence: emergence.json) as ``--out`` does. In Jupyter the plot
    shows inline."""

    def __init__(self, name: str, report, what: str, draw, save):
        self.name, self.report, self.what = name, report, what
        self._draw, self._save = draw, save

    def __repr__(self) -> str:
        return f"Analysis({self.name} on {self.what})"

    def to_dict(self) -> dict:
        """The report as plain data (JSON-ready): what ``--json`` prints, and more."""
        return self.report.to_dict()

    def png(self) -> bytes | None:
        """The plot as PNG bytes (None for emergence, which has none)."""
        if self._draw is None:
            return None
        buf = io.BytesIO()
        self._draw(buf)
        return buf.getvalue()

    def save(self, folder: str | Path):
        """Write the files ``charnn analyze NAME --out FOLDER`` writes (never over files charnn did not write)."""
        return self._save(Path(folder))

    def _repr_png_(self) -> bytes | None:
        return self.png()


def _iframe(page: str, height: int) -> str:
    # A page runs its own script and styles: inside an iframe it cannot touch the notebook's.
    return (
        f'<iframe srcdoc="{html.escape(page, quote=True)}" style="width:100%;height:{height}px;'
        f'border:1px solid #ccc" sandbox="allow-scripts"></iframe>'
    )


class Attention:
    """What a transformer's heads attended to while reading a text (``Model.attention``).
    ``weights`` is (layers, heads, characters, block): ``weights[l, h, t, j]`` is the weight head h
    of layer l put, reading character t, on character t - j (j = 0: itself); ``context[t]``
    characters before t were visible, and the columns past it are 0;
    ``ranking`` is one result per pattern (.name, .about, .queries, .top: layer, head, score and
    chance, best first). In Jupyter it shows the attention page."""

    def __init__(self, text: str, weights: np.ndarray, context: np.ndarray, ranking: list, subject, top: int):
        self.text, self.weights, self.context, self.ranking = text, weights, context, ranking
        self._subject, self._top = subject, top

    def __repr__(self) -> str:
        layers, heads = self.weights.shape[:2]
        return f"Attention({len(self.text):,} characters, {layers} layers x {heads} heads)"

    def html(self) -> str:
        """The attention page (self-contained: nothing loaded from the network) as one HTML string."""
        from charnn.web.pages import attention_page_html

        return attention_page_html(self._subject, self._top)[0]

    def _repr_html_(self) -> str:
        return _iframe(self.html(), 620)


class Cells:
    """What each unit did while a model read a text: ``cells[q]`` is a numpy array (layers,
    characters, units) for quantity q (an LSTM's "c" = tanh(c), "h", gates "i", "f", "o", "g"; a
    GRU's or RNN's "h" ...; a transformer's "m", its MLP neurons)."""

    def __init__(self, text: str, values: dict[str, np.ndarray], subject=None):
        self.text, self.values, self._subject = text, values, subject

    def __getitem__(self, quantity: str) -> np.ndarray:
        if quantity not in self.values:
            raise KeyError(f"{quantity!r}: recorded quantities are {', '.join(self.values)}")
        return self.values[quantity]

    @property
    def quantities(self) -> list[str]:
        """The recorded quantities' names, e.g. ["c", "h", "i", "f", "o", "g"] for an LSTM."""
        return list(self.values)

    def cell(self, layer: int, cell: int, quantity: str | None = None) -> np.ndarray:
        """One unit's values over the text, (characters,)."""
        return self[quantity or self.quantities[0]][layer, :, cell]

    def __repr__(self) -> str:
        shapes = ", ".join(f"{q} {tuple(v.shape)}" for q, v in self.values.items())
        return f"Cells({len(self.text):,} characters: {shapes})"

    def to_pandas(self):
        """One row per character, one column per (quantity, layer, unit); the character is the index."""
        try:
            import pandas as pd
        except ImportError:
            raise CharnnError("to_pandas needs pandas: pip install pandas") from None
        cols = {
            (q, layer, k): v[layer, :, k]
            for q, v in self.values.items()
            for layer in range(v.shape[0])
            for k in range(v.shape[2])
        }
        frame = pd.DataFrame(cols, index=pd.Index(list(self.text), name="char"))
        frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["quantity", "layer", "unit"])
        return frame

    def html(self) -> str:
        """The cells page (self-contained: nothing loaded from the network) as one HTML string."""
        from charnn.web.pages import cells_page_html

        if self._subject is None:
            raise CharnnError("these cells were made without their model: no page to draw")
        return cells_page_html(self._subject)

    def _repr_html_(self) -> str:
        return _iframe(self.html(), 560)
