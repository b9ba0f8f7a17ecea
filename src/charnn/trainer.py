"""The training loop: truncated BPTT over parallel streams, evaluation, checkpoints, snapshots.

Everything that decides the next step is part of the saved state (weights, optimizer, RNG,
carried hidden state, data position, counters), so a run stopped after step k and resumed
computes exactly what an uninterrupted run would have (bit-identical on the CPU).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import re
import signal
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, cast

import torch
from tqdm import tqdm

from charnn import checkpoint as ckpt
from charnn import cudagraph, curves
from charnn.config import RunConfig, flag
from charnn.data import RandomWindows, StreamBatcher, prepare
from charnn.devices import (
    autocast,
    clip_gradients,
    foreach_ok,
    fused_adamw_ok,
    pick_device,
    pin_ok,
    resolve_precision,
    rng_states,
    set_rng_states,
    set_threads,
    wide_float,
)
from charnn.distributed import Dist
from charnn.documents import check_lengths
from charnn.errors import CharnnError
from charnn.evaluate import evaluate
from charnn.files import RunLock, clean_temporaries, keep_lines, write_atomic
from charnn.log import info, warn
from charnn.model import Model, build, detach_state, grow_rows
from charnn.optim import MuonAdamW, gate_blocks, hidden_matrices
from charnn.sample import NonFiniteOutput, sample_text
from charnn.samplestats import SubstringIndex, snapshot_metrics
from charnn.vocab import TokenVocab, Vocab

# Snapshots record how novel their text is against the training split, below this size (the
# index costs 8 bytes per training character and each length's sort about 0.1 s per million).
SNAPSHOT_METRICS_MAX_CHARS = 20_000_000

# Settings that may change when a run is resumed; every other setting is fixed by the run.
RESUMABLE = {
    "max_steps",
    "max_epochs",
    "max_time",
    "patience",
    "eval_every",
    "eval_chars",
    "device",
    "threads",
    "precision",
    "compile",
    "cuda_graph",
    "checkpoint_seconds",
    "keep_checkpoints",
    "keep_every",
    "tensorboard",
    "ngram_mix",  # read only at the end of the run
}


@dataclass
class TrainResult:
    steps: int
    epoch: float
    best_val_loss: float
    last_val_loss: float
    stopped_by: str  # "max-steps", "max-epochs", "max-time", "patience", "interrupt"
    run_dir: Path
    signal: int = 0  # the signal that interrupted the run (SIGINT, SIGTERM, SIGHUP), if one did
    # the best checkpoint's loss on the whole validation split, when evaluations read only
    # --eval-chars of it (None when they read all of it, or the run was interrupted)
    best_val_loss_whole: float | None = None
    val_chars: int = 0
    best_bpc: float | None = None  # bits per character of the best checkpoint (whole split when read)
    units: str = "chars"  # what the losses are per: chars, or tokens for a token model
    # --ngram-mix: the best model mixed with an n-gram, scored on the validation split (a
    # charnn.study.mixture.Mixture, which api.train fits once the run has ended), and a
    # study.mixture.Sampler of it holding the n-gram it counted (for the end-of-run samples)
    mixture: Any = None
    mixture_sampler: Any = None


def lr_at(cfg, step: int, epoch: float, progress: float) -> float:
    """The learning rate for the step about to be taken.

    progress in [0, 1] is how far the run is through its budget (steps, time or epochs).
    """
    t = cfg.train
    warm = min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps else 1.0
    if t.schedule == "constant":
        return t.lr * warm
    if t.schedule == "epoch-decay":  # char-rnn: after each epoch past decay_after, lr *= rate
        done = int(epoch)
        return t.lr * warm * t.decay_rate ** max(0, done - t.decay_after_epochs + 1)
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))
    return t.lr * warm * (t.min_lr_frac + (1 - t.min_lr_frac) * cos)


def make_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer | MuonAdamW:
    """The optimiser, in its fastest implementation for where the weights are.

    On the CPU PyTorch defaults to one small kernel per tensor and per operation; the fused
    AdamW (one kernel over every tensor) takes 0.4 ms instead of 1.2-1.5 ms per step of the
    default preset, which is 4% of a step. RMSprop has no fused kernel: its multi-tensor one.
    """
    t = cfg.train
    if t.optimizer == "rmsprop":  # the paper's optimiser, with char-rnn's decay rate 0.95
        return torch.optim.RMSprop(
            model.parameters(), lr=t.lr, alpha=0.95, eps=1e-8, foreach=foreach_ok(next(model.parameters()).device.type)
        )
    device = next(model.parameters()).device.type
    matrices, rest = hidden_matrices(model)
    if t.optimizer == "muon" and matrices:
        if not hasattr(torch.optim, "Muon"):
            raise CharnnError(
                f"--optimizer muon needs torch 2.9 or later (this is {torch.__version__}): upgrade torch, "
                "or pass --optimizer adamw"
            )
        blocks = gate_blocks(model, matrices) if t.muon_gates else None
        return MuonAdamW(
            matrices, rest, t.lr, t.weight_decay, fused=fused_adamw_ok(device) or None, ns_steps=t.muon_ns_steps, blocks=blocks
        )
    return torch.optim.AdamW(
        model.parameters(), lr=t.lr, betas=(0.9, 0.99), weight_decay=t.weight_decay, fused=fused_adamw_ok(device) or None
    )


class _StopFlag:
    """Ctrl-C, SIGTERM (a preempted job, `timeout`, `kill`) or SIGHUP (a closed terminal) asks
    the loop to save and stop at the next step boundary; a second signal aborts at once (the
    last checkpoint written stays complete: files are renamed into place)."""

    SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None)

    def __init__(self):
        self.signum = 0
        self._old = {}

    @property
    def set(self) -> bool:
        return bool(self.signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}


def _state_tensors(state) -> dict[str, torch.Tensor]:
    if state is None:
        return {}
    if isinstance(state, tuple):
        return {"state.h": state[0], "state.c": state[1]}
    return {"state.h": state}


def _state_from(tensors, device):
    if "state.c" in tensors:
        return (tensors["state.h"].to(device), tensors["state.c"].to(device))
    if "state.h" in tensors:
        return tensors["state.h"].to(device)
    return None


def _rng_tensors(per_rank: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Every rank's RNG states as checkpoint tensors: rng.<rank>.<cpu|cuda|mps>."""
    return {f"rng.{r}.{k}": v for r, states in enumerate(per_rank) for k, v in states.items()}


def _restore_rng(tensors, rank: int, world: int, device_type: str) -> None:
    """This rank's RNG states from a checkpoint. Saved by as many processes: each takes its own
    and the run continues exactly; saved by another number (or by a version that kept rank 0's
    alone), the CPU state of rank 0 seeds rank 0 and the other ranks start fresh streams, so
    dropout masks (not the weights' arithmetic) differ from an uninterrupted run."""
    ranks = {int(k.split(".")[1]) for k in tensors if k.startswith("rng.") and k.split(".")[1].isdigit()}
    if ranks == set(range(world)):
        set_rng_states({k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"rng.{rank}.")}, device_type)
    elif rank == 0 and ("rng.0.cpu" in tensors or "rng.cpu" in tensors):
        torch.set_rng_state(tensors.get("rng.0.cpu", tensors.get("rng.cpu")))


class _Loss(torch.nn.Module):
    """The model's loss as a forward(), the call DistributedDataParallel hooks into."""

    def __init__(self, model: Model):
        super().__init__()
        self.model = model

    def forward(self, x, y, state):
        return self.model.loss(x, y, state)


def keep_step(t, step: int) -> bool:
    """Whether the weights at `step` are kept in RUN/checkpoints (TrainConfig.keep_checkpoints,
    keep_every): the snapshot steps and each doubling after the last (4000, 8000, ... by default),
    and every keep_every-th step."""
    if step <= 0:
        return False
    if t.keep_every and step % t.keep_every == 0:
        return True
    if t.keep_checkpoints != "snapshots":
        return False
    if step in t.snapshot_steps:
        return True
    last = max(t.snapshot_steps, default=0)
    ratio = step // last if last else 0
    return last > 0 and step % last == 0 and ratio >= 2 and ratio & (ratio - 1) == 0


def _streams(state, first: int, count: int):
    """This process's streams of a global (L, B, H) state."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s[:, first : first + count].contiguous() for s in state)
    return state[:, first : first + count].contiguous()


STOP_REASONS = ("", "max-steps", "max-epochs", "max-time", "patience", "interrupt")
# A loss above this many nats per character is a divergence even while it is finite: guessing
# uniformly costs ln(V) <= 11.1 nats for any vocabulary up to 65,536 symbols, and a healthy run
# starts near that and only falls (--lr 1e6 reaches 10^7 nats by its second step).
DIVERGED_LOSS = 100.0
# The training loop reads values back from the device (the loss, the divergence check, a stop
# decision shared under torchrun) only every LOG_EVERY steps and at evaluations, snapshots and
# saves: every read-back stalls a GPU until its queue drains.
LOG_EVERY = 10
LOGS = ("metrics.jsonl", "samples.jsonl")


@dataclass
class TrainState:
    """The counters that, with the tensors saved beside them (weights, optimizer, every RNG
    state, the carried hidden state), decide every later step. One list: saved and restored
    from here only."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best_val_loss: float = math.inf
    last_val_loss: float = math.inf
    evals_since_best: int = 0
    elapsed: float = 0.0  # seconds of training before this process started

    def to_meta(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_meta(cls, meta: dict) -> "TrainState":
        return cls(**{f.name: meta[f.name] for f in dataclasses.fields(cls) if f.name in meta})


class WeightAverage:
    """--ema: an exponential moving average of a model's weights, kept on its device beside them.
    After each optimiser step, avg <- avg + (1 - d) (weights - avg), the decay ramping up over the
    first steps (d = min(decay, (1 + step) / (10 + step))) so that the random start fades fast.
    Checkpoints hold it as "ema.NAME" tensors (resume continues it exactly)."""

    def __init__(self, model: torch.nn.Module, decay: float, device_type: str):
        self.model, self.decay = model, decay
        self.values = [p.detach().clone() for p in model.parameters()]
        self.foreach = foreach_ok(device_type)

    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        params = [p.detach() for p in self.model.parameters()]
        if self.foreach:
            torch._foreach_lerp_(self.values, params, 1 - d)
        else:
            for e, p in zip(self.values, params):
                e.lerp_(p, 1 - d)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"ema.{name}": e for (name, _), e in zip(self.model.named_parameters(), self.values)}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        for (name, _), e in zip(self.model.named_parameters(), self.values):
            e.copy_(tensors[f"ema.{name}"].to(e.device))

    @contextlib.contextmanager
    def swapped_in(self):
        """The model holds the averaged weights inside the block, its own again after it."""
        params = list(self.model.parameters())
        backup = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, e in zip(params, self.values):
                p.copy_(e)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(params, backup):
                    p.copy_(b)


def _bar_class():
    """tqdm's notebook widget inside Jupyter when ipywidgets is there (shown unless progress is
    False: the widget does not ask for a terminal); the text bar elsewhere."""
    if "ipykernel" in sys.modules:
        try:
            import ipywidgets  # noqa: F401
            from tqdm.notebook import tqdm as widget

            return widget
        except ImportError:
            pass
    return tqdm


class Diverged(CharnnError):
    pass


def train(
    cfg: RunConfig | None,
    out: str | Path,
    resume: bool = False,
    init_from: str | Path | None = None,
    overrides: dict | None = None,
    progress: bool | None = None,
    on_step: Callable[[int], bool] | None = None,
) -> TrainResult:
    """Train (or resume) a run in directory `out`.

    overrides (with resume): the settings given again. Those equal to the saved run's are
    accepted, RESUMABLE ones (and a lower lr) change, any other is refused with both values.
    Keys are field names of the config's sections, or "text", "preset", "init_from".
    on_step(step) -> True asks the loop to stop as if interrupted (used by tests).
    Under torchrun, each process trains its share of the streams (see charnn.distributed).
    """
    dd = Dist()
    out = Path(out)
    lock = _open_run_dir(out) if dd.main else None
    finished = False
    try:
        result = Trainer(cfg, out, resume, init_from, overrides, progress, on_step, dd).run()
        finished = True
        return result
    finally:
        dd.close(finished)
        if lock is not None:
            lock.release()
            if not any((out / n).exists() for n in (ckpt.LAST, ckpt.BEST)):  # nothing saved: leave no debris
                for name in (RunLock.NAME, "config.json", "vocab.json", *LOGS):
                    (out / name).unlink(missing_ok=True)
                if lock.created:
                    try:
                        out.rmdir()
                    except OSError:
                        pass


def _open_run_dir(out: Path) -> RunLock:
    """Create (if needed) and lock the run directory, and clean what a killed run left."""
    if out.exists() and not out.is_dir():
        raise CharnnError(f"--out {out} is a file, not a run directory; choose another --out")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CharnnError(f"cannot create the run directory {out}: {e.strerror or e}; choose a writable --out") from None
    lock = RunLock(out).acquire()
    lock.created = created
    clean_temporaries(out)
    return lock


def check_resume(saved: RunConfig, asked: dict, meta: dict) -> RunConfig:
    """The saved configuration with the resumable settings of `asked` applied.

    A setting given again with its saved value is accepted (so `--resume` can be appended to the
    original command); a lower learning rate is allowed (the way out of a divergence).
    """
    cfg = copy.deepcopy(saved)
    wrong = []
    for key, value in (asked or {}).items():
        now: Any
        if key == "text":
            now = cfg.data.text
        elif key == "preset":
            now = cfg.preset or "default"
        elif key == "init_from":
            now = meta.get("init_from")
        else:
            section = next((sec for sec in ("train", "model", "data") if hasattr(getattr(cfg, sec), key)), None)
            if section is None:
                raise CharnnError(f"--resume: unknown setting {key!r}")
            now = getattr(getattr(cfg, section), key)
            if key in RESUMABLE or (key == "lr" and isinstance(value, (int, float)) and 0 < value <= now):
                setattr(getattr(cfg, section), key, value)
                continue
        same = tuple(now) == tuple(value) if isinstance(now, (tuple, list)) and isinstance(value, (tuple, list)) else now == value
        if not same:
            wrong.append(f"{flag(key)} (saved {_show(now)}, given {_show(value)})")
    if wrong:
        raise CharnnError(
            f"--resume continues the run as it was configured; these differ from it: "
            f"{'; '.join(sorted(wrong))}. Drop them, or start a new run with --init-from"
        )
    return cfg.complete().validate()


def _show(v) -> str:
    if isinstance(v, (tuple, list)):
        return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
    return "none" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


class Trainer:
    """One run: set up from a new config or a saved checkpoint, then step until a stop rule fires.

    Saves: ``last.safetensors`` (the full state) at step 0, at every evaluation, at least every
    ``checkpoint_seconds`` seconds and at the end; ``best.safetensors`` when validation improves.
    A non-finite loss, gradient or weight is never saved: the run stops with `Diverged`.
    """

    def __init__(self, cfg, out: Path, resume: bool, init_from, asked, progress, on_step, dd: Dist):
        self.out, self.dd, self.progress, self.on_step = out, dd, progress, on_step
        self.meta: dict = {}
        self.grown_from: Vocab | None = None  # --init-from onto new symbols: the source model's vocabulary
        # Three ways in: a fresh run, a fresh run from another's weights (--init-from), or a resumed
        # one. They differ in where the settings come from (_settings), the vocabulary and first
        # weights (_data_and_vocab), and what the checkpoint restores (_restore); the rest is one path.
        saved = self._load_resumable(asked) if resume else None
        self.cfg = cfg = self._settings(cfg, saved, asked)
        t = cfg.train
        if t.tensorboard:
            curves.require()  # before anything is written
        self.device = dd.device(pick_device(t.device))
        self.precision = resolve_precision(t.precision, self.device.type)  # auto: bf16 where the CPU has it
        dd.start(self.device)
        set_threads(t.threads)
        enc, embed_std, init_weights = self._data_and_vocab(resume, saved, init_from)
        self.splits = enc.splits(cfg.data.split)
        if cfg.model.block and len(self.splits["train"]) <= cfg.model.block:
            raise CharnnError(
                f"--block {cfg.model.block} is longer than the training split ({len(self.splits['train']):,} "
                f"characters): a transformer trains on windows of its whole block; choose --block "
                f"{max(1, len(self.splits['train']) - 1)} or less, or give it more text"
            )
        self.batcher = (
            RandomWindows(self.splits["train"], t.batch_size, t.seq_len, t.seed)
            if t.windows == "random"
            else StreamBatcher(self.splits["train"], t.batch_size, t.seq_len)
        )
        self.first, self.per = dd.shard(self.batcher.batch_size)  # this process's streams of the global batch
        self.pin = pin_ok(self.device.type)
        if len(self.splits["val"]) < 2:
            warn("the validation split is empty: no validation loss, best checkpoint follows training loss")

        torch.manual_seed(t.seed)
        self.model = build(cfg.model, embed_std).to(self.device)
        if dd.active:  # every rank builds the same weights (DDP broadcasts rank 0's), then draws its own dropout
            torch.manual_seed(t.seed + 1_000_003 * dd.rank)
        if init_weights is not None and self.grown_from is not None:  # new symbols' rows: this model's fresh ones
            init_weights = grow_rows(init_weights, self.model.state_dict(), self.grown_from, self.vocab)
        if init_weights is not None:
            self.model.load_state_dict(init_weights)
        self.opt = make_optimizer(cfg, self.model)
        # the moving average of the weights (--ema): what evaluations, snapshots and kept weights use
        self.ema = WeightAverage(self.model, t.ema, self.device.type) if t.ema else None
        self.state, carried = self._restore(saved) if resume else (TrainState(), None)
        self.carried = _streams(carried, self.first, self.per)
        self.net = dd.wrap(_Loss(self.model), self.device)  # DDP: rank 0's initial weights are broadcast here
        if t.compile:  # checkpoints keep saving `model` itself, so their keys do not change
            # Inductor suggests TF32 matmuls on CUDA (seen on an H200); --precision fp32 keeps PyTorch's
            # fp32 matmuls, and the advice is not one a charnn user can act on from the command line.
            warnings.filterwarnings("ignore", message="TensorFloat32 tensor cores", category=UserWarning)
            self.net = cast(torch.nn.Module, torch.compile(self.net))  # an OptimizedModule
        # --cuda-graph: captured at the first step, once weights and state are final
        self.graphed: cudagraph.GraphedStep | None = None
        if t.cuda_graph:
            cudagraph.check(cfg, self.device.type, dd.active)
        if dd.main:
            write_atomic(out / "config.json", cfg.to_json() + "\n")
            write_atomic(out / "vocab.json", self.vocab.to_json() + "\n")
            step = self.state.step  # logs and kept weights after the checkpoint's step belong to a lost future
            for name in LOGS:
                keep_lines(out / name, lambda line: json.loads(line).get("step", 0) <= step)
            clean_temporaries(out / ckpt.KEPT)
            for later in (k for k in ckpt.kept_steps(out) if k > step):
                ckpt.kept_path(out, later).unlink(missing_ok=True)
        self.units_name = "tokens" if isinstance(self.vocab, TokenVocab) else "chars"
        self.char_counts = self.vocab.char_counts() if self.units_name == "tokens" else None  # for bits per char
        # bits per character of the last evaluation (a token model's loss is per token)
        self.val_bpc = self.state.last_val_loss / math.log(2) if self.units_name == "chars" else float("nan")
        self.judge: dict = {}  # the training split's substring index, built at the first snapshot
        self.health: dict | None = None  # device-side divergence bookkeeping (see _watch)
        self.train_loss = self.grad_norm = float("nan")
        self.saved_step = self.state.step if resume else None
        self.curves = curves.Curves(out, self.saved_step, chars=self.units_name == "chars") if t.tensorboard and dd.main else None

    def _settings(self, cfg: RunConfig | None, saved, asked) -> RunConfig:
        """The run's configuration: a resumed run's own, with the settings given again checked
        against it (check_resume); or the new one, validated, with a fresh run id."""
        if saved is not None:
            self.meta = saved.meta
            return check_resume(saved.config, asked, saved.meta)
        if cfg is None:
            raise CharnnError("a new run needs its settings (resume=True only continues a run that exists)")
        cfg = copy.deepcopy(cfg).complete().validate()  # the run fills in its copy (the embedding fitted to the
        # vocabulary, the run id): the caller's stays as given, so the same config starts the same run again
        if (self.out / ckpt.LAST).exists() or (self.out / ckpt.BEST).exists():
            raise CharnnError(f"{self.out} already holds a run; pass --resume to continue it, or choose another --out")
        cfg.run_id = uuid.uuid4().hex[:16]
        return cfg

    def _restore(self, saved) -> tuple[TrainState, object]:
        """A resumed run: the weights, their average, the optimiser, every RNG, the counters and
        the carried state, as the checkpoint holds them; -> (counters, carried state)."""
        self.model.load_state_dict(saved.weights)
        if self.ema is not None:
            self.ema.load(saved.tensors)
        ckpt.optimizer_from_tensors(self.opt, saved.tensors, self.meta["optimizer"])
        _restore_rng(saved.tensors, self.dd.rank, self.dd.world, self.device.type)
        return TrainState.from_meta(self.meta), _state_from(saved.tensors, self.device)

    def _data_and_vocab(self, resume: bool, saved, init_from):
        """The encoded text and its vocabulary: the saved run's, the --init-from model's, or the
        text's own (with the embedding capped at it); -> (encoded text, embedding init scale,
        initial weights or None)."""
        cfg, t, out, dd = self.cfg, self.cfg.train, self.out, self.dd
        d = cfg.data
        tokens = None  # a token run resuming or fine-tuning reads the text with its own tokenizer
        if d.unit == "bpe" and (resume or init_from is not None):
            theirs = (saved if resume else ckpt.load(init_from, "best")).vocab
            if not isinstance(theirs, TokenVocab):
                raise CharnnError(f"--init-from: the model reads {theirs.unit} units but --unit is bpe")
            tokens = theirs
        enc = prepare(
            d.text,
            d.include,
            d.unit,
            d.encoding_errors,
            t.seed,
            split=d.split,
            vocab_size=d.bpe_vocab,
            tokens=tokens,
            documents=d.documents,
            label=(d.label, d.labels_file),
        )
        if d.documents:
            check_lengths(enc.ids, enc.vocab, d.max_document, d.documents)
        self.lead_in, self.labels, self.lead_label = enc.lead_in, list(enc.labels), enc.lead_label
        self.label_counts = list(enc.label_counts)
        if self.labels and init_from is not None:
            raise CharnnError("--init-from onto labelled documents is not supported yet; start a new run")
        if resume and self.meta.get("data_key") not in (None, enc.key):
            raise CharnnError(
                f"the text {cfg.data.text} has changed since this run started; "
                f"resume needs the same text (or start a new run with --init-from {out})"
            )
        self.data_key = enc.key
        embed_std, init_weights = 1.0, None
        if resume:
            self.vocab = saved.vocab
            enc = enc.remap(self.vocab, "the text")
            cfg.model.vocab_size = len(self.vocab)  # the saved model's shape, as it was trained
        elif init_from is not None:
            source = ckpt.load(init_from, "best")
            self.vocab = source.vocab
            if self.vocab.unit != cfg.data.unit:
                raise CharnnError(f"--init-from: the model reads {self.vocab.unit} units but --unit is {cfg.data.unit}")
            self.vocab = self._grown(source.vocab, enc.vocab)
            enc = enc.remap(self.vocab, "--init-from: the new text")
            init_weights = source.build_model().state_dict()  # checked shapes and finite weights
            cfg.model = dataclasses.replace(source.config.model, vocab_size=len(self.vocab))
            self.meta = {"init_from": str(Path(init_from).resolve())}
        else:
            self.vocab = enc.vocab
            cfg.model.labels = len(self.labels)
            asked_embed = cfg.model.embed
            embed_std = cfg.model.fit_vocab(len(self.vocab))
            if cfg.model.embed != asked_embed and dd.main:
                info(
                    f"the embedding is {cfg.model.embed} wide, not {asked_embed}: the text has {cfg.model.embed} "
                    f"symbols, and a wider embedding represents nothing more"
                )

        return enc, embed_std, init_weights

    def _grown(self, old: Vocab, text: Vocab) -> Vocab:
        """--init-from onto text with symbols the model never saw: the vocabulary grows (the old
        ids keep their rows; the new ones start from a fresh model's), and it is said."""
        self.grown_from = None
        if isinstance(old, TokenVocab) or set(text.codes.tolist()) <= set(old.codes.tolist()):
            return old
        new = Vocab(sorted(set(old.codes.tolist()) | set(text.codes.tolist())), old.unit)
        added = sorted(set(text.codes.tolist()) - set(old.codes.tolist()))
        if self.dd.main:
            info(
                f"--init-from: the vocabulary grows by {old.describe(added)}; their rows start fresh, the "
                f"{len(old)} others keep the model's"
            )
        self.grown_from = old
        return new

    def _load_resumable(self, asked) -> ckpt.Checkpoint:
        out = self.out
        if not (out / ckpt.LAST).is_file():
            raise CharnnError(f"--resume: {out} holds no {ckpt.LAST} to resume from; drop --resume to start a new run")
        saved = ckpt.load(out, "last")
        if "step" not in saved.meta or "optimizer" not in saved.meta:
            raise CharnnError(f"{out / ckpt.LAST} holds no training state to resume from")
        mine = _run_id_of(out)
        if saved.config.run_id and mine and saved.config.run_id != mine:
            raise CharnnError(
                f"{out / ckpt.LAST} belongs to another run (run id {saved.config.run_id}; this "
                f"directory's run is {mine}); --resume continues only the run that wrote {out}"
            )
        return saved

    # ---- one step -------------------------------------------------------------------------

    def progress_frac(self) -> float:
        t, st = self.cfg.train, self.state
        fr = []
        if t.max_steps:
            fr.append(st.step / t.max_steps)
        if t.max_time:
            fr.append(self.elapsed() / t.max_time)
        if t.max_epochs:
            fr.append((st.epoch + st.step_in_epoch / self.batcher.steps_per_epoch) / t.max_epochs)
        return max(fr) if fr else 0.0

    def elapsed(self) -> float:
        return self.state.elapsed + time.perf_counter() - self.t0

    def epoch_float(self) -> float:
        return self.state.epoch + self.state.step_in_epoch / self.batcher.steps_per_epoch

    def train_step(self) -> float:
        """One optimiser step on the next window of every stream; returns the learning rate."""
        t, st, model = self.cfg.train, self.state, self.model
        reset = st.step_in_epoch >= self.batcher.steps_per_epoch
        if reset:  # an epoch ends: streams start over from zero
            st.epoch += 1
            st.step_in_epoch = 0
            self.carried = None
        chunk = self.batcher.window(st.step_in_epoch, self.first, self.per, st.epoch)  # (B/world, T+1), only ours
        if self.pin:  # page-locked memory: the copy below runs asynchronously
            chunk = chunk.pin_memory()
        lr = lr_at(self.cfg, st.step, self.epoch_float(), self.progress_frac())
        for g in self.opt.param_groups:
            g["lr"] = lr
        if t.cuda_graph:
            return self._graphed_step(chunk, reset, lr)
        chunk = chunk.to(self.device, non_blocking=True)
        x, y = chunk[:, :-1], chunk[:, 1:]
        with autocast(self.device.type, self.precision):
            loss, state = self.net(x, y, self.carried)
        if self.precision == "bf16" and state is not None:  # carry the state in fp32: checkpoints see one dtype
            state = tuple(s.float() for s in state) if isinstance(state, tuple) else state.float()
        self.carried = detach_state(state)
        loss_d = self.dd.mean(loss.detach()).float()  # the global batch's loss, left on the device
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = clip_gradients(list(model.parameters()), t.grad_clip, t.grad_clamp, self.device.type)
        self._update(loss_d, norm.float())
        return lr

    def _update(self, loss: torch.Tensor, norm: torch.Tensor) -> None:
        """The end of every step, graphed or not: note its health, apply the optimiser, average."""
        st = self.state
        self._watch(loss, norm, st.step + 1)
        self.opt.step()
        if self.ema is not None:
            self.ema.update(st.step + 1)
        st.step += 1
        st.step_in_epoch += 1

    def _graphed_step(self, chunk: torch.Tensor, reset: bool, lr: float) -> float:
        """train_step with --cuda-graph: the same work, the forward, backward and clipping replayed
        from one captured graph (charnn.cudagraph), the optimiser's step as always."""
        t = self.cfg.train
        if self.graphed is None:
            self.graphed = cudagraph.GraphedStep(
                self.model, self.per, self.batcher.seq_len, self.carried, t.grad_clip, t.grad_clamp, cudagraph.stand_in()
            )
        g = self.graphed
        g.step(chunk, reset)
        self.carried = g.state  # the buffers themselves: saves read the latest state
        self._update(g.loss, g.norm)
        return lr

    @contextlib.contextmanager
    def averaged(self):
        """The model with the averaged weights swapped in (when --ema is on), in eval mode."""
        with _eval_mode(self.model), self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext():
            yield self.model

    def _watch(self, loss: torch.Tensor, norm: torch.Tensor, step: int) -> None:
        """Note on the device, without reading anything back, the first step whose loss or
        gradient norm went bad; check_health reads it. A bad step's update is applied (skipping
        it would need a read-back), but the weights it makes are never saved: every save and
        evaluation checks first."""
        if self.health is None:
            self.health = {
                "first_bad": torch.full((), -1, dtype=torch.long, device=loss.device),
                "bad_loss": torch.zeros((), device=loss.device),
                "bad_norm": torch.zeros((), device=loss.device),
            }
        h = self.health
        new = (~torch.isfinite(loss) | (loss > DIVERGED_LOSS) | ~torch.isfinite(norm)) & (h["first_bad"] < 0)
        h["first_bad"] = torch.where(new, step, h["first_bad"])
        h["bad_loss"] = torch.where(new, loss, h["bad_loss"])
        h["bad_norm"] = torch.where(new, norm, h["bad_norm"])
        h["loss"], h["norm"] = loss, norm

    def check_health(self) -> None:
        """The one read-back of the loop: the latest loss, and a divergence noted since."""
        if self.health is None:
            return
        h = self.health
        wide = wide_float(h["loss"].device.type)
        first_bad, bad_loss, bad_norm, loss, norm = torch.stack(
            [h[k].to(wide) for k in ("first_bad", "bad_loss", "bad_norm", "loss", "norm")]
        ).tolist()
        self.train_loss, self.grad_norm = loss, norm
        if first_bad >= 0:
            bad = not math.isfinite(bad_loss) or bad_loss > DIVERGED_LOSS
            self._diverged(f"loss {bad_loss:g}" if bad else f"gradient norm {bad_norm:g}", at=int(first_bad))

    def _diverged(self, what: str, at: int | None = None) -> None:
        st, lr = self.state, self.cfg.train.lr
        kept = f"{ckpt.LAST} still holds step {self.saved_step}" if self.saved_step is not None else "nothing was saved"
        raise Diverged(
            f"training diverged at step {st.step if at is None else at} ({what}); {kept}; continue with a lower --lr: "
            f"charnn train --resume --out {self.out} --lr {lr / 10:g}"
        )

    # ---- evaluation, logs, checkpoints --------------------------------------------------------

    def evaluate(self) -> float:  # on rank 0; the others get its number
        t = self.cfg.train
        data = self.splits["val"] if len(self.splits["val"]) >= 2 else self.splits["train"]
        val = 0.0
        if self.dd.main:
            with self.averaged():
                score = evaluate(self.model, data, max_chars=t.eval_chars, char_counts=self.char_counts)
            val, self.val_bpc = score.loss, score.bpc
        val = self.dd.broadcast(val, self.device)
        if not math.isfinite(val) or val > DIVERGED_LOSS:
            self._diverged(f"validation loss {val:g}")
        return val

    def log(self, rec: dict) -> None:
        if self.dd.main:
            with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
            if self.curves is not None:
                self.curves.record(rec)

    def snapshot(self, val_loss: float | None) -> None:
        if not self.dd.main:
            return
        t, st, vocab = self.cfg.train, self.state, self.vocab
        try:
            with self.averaged():
                text = sample_text(self.model, vocab, length=t.snapshot_chars, seed=t.seed + st.step, temperature=0.8)[0]
        except NonFiniteOutput:
            self._diverged("non-finite outputs while sampling a snapshot")
        rec = {
            "step": st.step,
            "epoch": round(self.epoch_float(), 4),
            "train_loss": self.train_loss,
            "val_loss": val_loss,
            "temperature": 0.8,
            "text": text,
        }
        if len(self.splits["train"]) <= SNAPSHOT_METRICS_MAX_CHARS:  # how much of the sample is copied
            if not self.judge:
                ids = self.splits["train"]
                train_text = vocab.decode(ids % len(vocab) if self.labels else ids)  # a labelled id: char + V * label
                self.judge["index"] = SubstringIndex(train_text)
                self.judge["words"] = set(re.findall(r"\w+", train_text))
            rec.update(snapshot_metrics(text, self.judge["index"], self.judge["words"]))
        with open(self.out / "samples.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        if self.curves is not None:
            self.curves.sample(st.step, text, 0.8)

    def sampling_meta(self) -> dict:
        """What every checkpoint of a documents run carries so that it alone samples documents:
        the lead-in sampling reads first (charnn.documents), and for labelled documents the label
        names (an id's label is its index here) and the lead-in's label."""
        meta = {"lead_in": self.lead_in} if self.lead_in else {}
        return (
            {**meta, "labels": self.labels, "lead_label": self.lead_label, "label_counts": self.label_counts}
            if self.labels
            else meta
        )

    def save_best(self, val: float | None) -> None:
        if self.dd.main:
            with self.averaged():
                ckpt.save(
                    self.out / ckpt.BEST,
                    self.cfg,
                    self.vocab,
                    self.model,
                    {
                        "step": self.state.step,
                        "val_loss": val,
                        "val_bpc": self.val_bpc if val is not None else None,
                        **self.sampling_meta(),
                    },
                )

    def save_kept(self, val: float | None) -> None:
        """The weights alone (with config and vocabulary: enough to sample), kept for the analyses
        over training. Written atomically, like every checkpoint."""
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            self._diverged("non-finite weights")
        if self.dd.main:
            path = ckpt.kept_path(self.out, self.state.step)
            path.parent.mkdir(exist_ok=True)
            with self.averaged():
                ckpt.save(
                    path,
                    self.cfg,
                    self.vocab,
                    self.model,
                    {
                        "step": self.state.step,
                        "val_loss": val,
                        "train_loss": self.train_loss,
                        "elapsed": self.elapsed(),
                        **self.sampling_meta(),
                    },
                )

    def save_last(self, finished: str = "") -> None:
        """The full training state; every process takes part in gathering the carried state."""
        full, state, dd = None, self.carried, self.dd
        if state is not None:
            full = tuple(dd.gather_streams(s) for s in state) if isinstance(state, tuple) else dd.gather_streams(state)
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            self._diverged("non-finite weights")
        rngs = dd.gather_objects({k: v.cpu() for k, v in rng_states(self.device.type).items()})
        self.last_save = time.perf_counter()
        if not dd.main:
            return
        opt_tensors, opt_json = ckpt.optimizer_to_tensors(self.opt)
        meta = {
            **self.state.to_meta(),
            "elapsed": self.elapsed(),
            "optimizer": opt_json,
            "data_key": self.data_key,
            "stopped_by": finished,
            "params": self.model.num_params,
            "batch_size": self.batcher.batch_size,
            "seq_len": self.batcher.seq_len,
        }
        if "init_from" in self.meta:
            meta["init_from"] = self.meta["init_from"]
        meta.update(self.sampling_meta())
        ema = self.ema.tensors() if self.ema is not None else {}
        ckpt.save(
            self.out / ckpt.LAST,
            self.cfg,
            self.vocab,
            self.model,
            meta,
            {**opt_tensors, **_rng_tensors(rngs), **_state_tensors(full), **ema},
        )
        self.saved_step = self.state.step

    # ---- the loop -------------------------------------------------------------------------

    def stop_reason(self, flag: _StopFlag) -> str:
        t, st, dd = self.cfg.train, self.state, self.dd
        # the same on every process: steps, epochs, evaluations (their loss is broadcast)
        if t.max_steps and st.step >= t.max_steps:
            return "max-steps"
        if t.max_epochs and self.epoch_float() >= t.max_epochs:
            return "max-epochs"
        if t.patience and st.evals_since_best >= t.patience:
            return "patience"
        if dd.active and st.step % LOG_EVERY:  # clocks and signals: rank 0's, shared every LOG_EVERY steps
            return ""
        reason = ""
        if t.max_time and self.elapsed() >= t.max_time:
            reason = "max-time"
        elif flag.set or (self.on_step is not None and st.step > 0 and self.on_step(st.step)):
            reason = "interrupt"
        if dd.active:
            reason = STOP_REASONS[int(dd.broadcast(STOP_REASONS.index(reason), self.device))]
        return reason

    def after_step(self, lr: float, speed: float) -> None:
        """Log, evaluate, snapshot and save as the step number and the clock ask."""
        t, st = self.cfg.train, self.state
        log_step = st.step % LOG_EVERY == 0
        due = bool(t.checkpoint_seconds) and time.perf_counter() - self.last_save >= t.checkpoint_seconds
        if self.dd.active:  # rank 0's clock decides, every LOG_EVERY steps (a broadcast waits for the device)
            due = log_step and bool(self.dd.broadcast(float(due), self.device))
        keep = keep_step(t, st.step)
        if log_step or due or keep or st.step % t.eval_every == 0 or st.step in t.snapshot_steps:
            self.check_health()
        if log_step:
            self.log(
                {
                    "step": st.step,
                    "epoch": round(self.epoch_float(), 4),
                    "lr": lr,
                    "train_loss": self.train_loss,
                    "grad_norm": self.grad_norm,
                    "chars_per_s": round(speed),
                    "elapsed": round(self.elapsed(), 3),
                }
            )
        val = None
        if st.step % t.eval_every == 0:
            val = st.last_val_loss = self.evaluate()
            self.log(
                {
                    "step": st.step,
                    "epoch": round(self.epoch_float(), 4),
                    "val_loss": val,
                    "val_bpc": self.val_bpc,
                    "elapsed": round(self.elapsed(), 3),
                }
            )
            if val < st.best_val_loss:
                st.best_val_loss, st.evals_since_best = val, 0
                self.save_best(val)
            else:
                st.evals_since_best += 1
            if self.quiet_lines:
                info(
                    f"step {st.step}  epoch {self.epoch_float():.2f}  train {self.train_loss:.4f}  val {val:.4f} "
                    f"({self.val_bpc:.3f} bpc)  {speed:,.0f} {self.units_name}/s"
                )
        if st.step in t.snapshot_steps or val is not None:
            self.snapshot(val)
        if keep:
            self.save_kept(val)
        if val is not None or due:
            self.save_last()

    def run(self) -> TrainResult:
        t, st, dd = self.cfg.train, self.state, self.dd
        bar = _bar_class()(
            total=t.max_steps or None,
            initial=st.step,
            disable=(self.progress is False or not dd.main) or None,
            unit="step",
            dynamic_ncols=True,
            leave=True,
            desc="train",
        )
        # progress None: tqdm shows a bar only on a terminal; elsewhere one line per evaluation.
        self.quiet_lines = bar.disable and self.progress is not False and dd.main
        if self.quiet_lines:
            info(
                f"training {self.cfg.model.describe()} "
                f"({self.model.num_params:,} parameters) on {len(self.splits['train']):,} characters, {self.device}"
            )
        self.t0 = self.last_save = time.perf_counter()
        if self.saved_step is None:  # the run can be resumed from the moment it starts
            self.save_last()
        window_t, window_chars, speed, settled = time.perf_counter(), 0, 0.0, False
        chars_per_step = self.batcher.batch_size * self.batcher.seq_len
        self.model.train()
        with _StopFlag() as flag:
            while not (stopped_by := self.stop_reason(flag)):
                lr = self.train_step()
                window_chars += chars_per_step
                now = time.perf_counter()
                if now - window_t >= 1.0:  # chars/s over the last second or so
                    speed = window_chars / (now - window_t)
                    window_t, window_chars, settled = now, 0, True
                elif not settled:  # before the first full second: the rate so far, not 0
                    speed = window_chars / max(now - window_t, 1e-9)
                self.after_step(lr, speed)
                if t.max_time and not t.max_steps and st.step > 5:
                    bar.total = max(st.step + 1, int(st.step / max(self.progress_frac(), 1e-9)))
                bar.set_postfix_str(
                    f"loss {self.train_loss:.3f} val {st.last_val_loss:.3f} "
                    f"({self.val_bpc:.2f} bpc) {speed:,.0f} {self.units_name[:3]}/s",
                    refresh=False,
                )
                bar.update(1)
            bar.close()
            self.finish(stopped_by)
        whole = self.whole_split_score(stopped_by)
        best_bpc = whole.bpc if whole else None
        if best_bpc is None and self.char_counts is not None and self.dd.main and (self.out / ckpt.BEST).exists():
            best_bpc = ckpt.load(self.out, "best").meta.get("val_bpc")  # a token run's report needs it
        return TrainResult(
            st.step,
            self.epoch_float(),
            st.best_val_loss,
            st.last_val_loss,
            stopped_by,
            self.out,
            flag.signum,
            whole.loss if whole else None,
            whole.chars if whole else len(self.splits["val"]) - 1,
            best_bpc,
            self.units_name,
        )

    def whole_split_score(self, stopped_by: str):
        """The end-of-run report reads the whole validation split, even when the evaluations
        during training read only its first --eval-chars characters (a big corpus's split can
        take minutes to read; once at the end is affordable)."""
        t, val = self.cfg.train, self.splits["val"]
        if stopped_by == "interrupt" or not self.dd.main or not t.eval_chars or len(val) <= t.eval_chars + 1:
            return None
        best = ckpt.load(self.out, "best")
        if best.meta.get("val_loss") is None:
            return None
        return evaluate(best.build_model(self.device), val, char_counts=self.char_counts)

    def finish(self, stopped_by: str) -> None:
        """The end-of-run evaluation (unless interrupted) and the final checkpoint."""
        t, st = self.cfg.train, self.state
        self.check_health()
        if stopped_by != "interrupt" and st.step % t.eval_every != 0:
            st.last_val_loss = self.evaluate()
            self.log({"step": st.step, "val_loss": st.last_val_loss, "val_bpc": self.val_bpc, "final": True})
            if st.last_val_loss < st.best_val_loss:
                st.best_val_loss, st.evals_since_best = st.last_val_loss, 0
                self.save_best(st.last_val_loss)
        if self.dd.main and not (self.out / ckpt.BEST).exists():  # stopped before any evaluation
            self.save_best(None)
        self.save_last(stopped_by)
        if self.curves is not None:
            self.curves.close()


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module):
    """The training model in eval mode for an evaluation or a snapshot, and back (this thread's
    own model: the inference code never switches a module itself)."""
    model.eval()
    try:
        yield model
    finally:
        model.train()


def _run_id_of(out: Path) -> str:
    """The run id a run directory's config.json records ("" when unknown)."""
    try:
        return str(json.loads((out / "config.json").read_text(encoding="utf-8")).get("run_id", ""))
    except (OSError, ValueError, AttributeError):
        return ""
