"""The training loop: truncated BPTT over parallel streams, evaluation, checkpoints, snapshots.

Everything that decides the next step is part of the saved state (weights, optimizer, RNG,
carried hidden state, data position, counters), so a run stopped after step k and resumed
computes exactly what an uninterrupted run would have (bit-identical on the CPU).
"""

from __future__ import annotations

import json
import math
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from charnn import checkpoint as ckpt
from charnn.config import RunConfig
from charnn.data import Encoded, StreamBatcher, prepare
from charnn.distributed import Dist
from charnn.errors import CharnnError
from charnn.evaluate import evaluate
from charnn.log import info, warn
from charnn.model import CharRNN, detach_state
from charnn.sample import sample_text
from charnn.samplestats import SubstringIndex, snapshot_metrics

# Snapshots record how novel their text is against the training split, below this size (the
# index costs 8 bytes per training character and each length's sort about 0.1 s per million).
SNAPSHOT_METRICS_MAX_CHARS = 20_000_000

# Settings that may change when a run is resumed; every other setting is fixed by the run.
RESUMABLE = {"max_steps", "max_epochs", "max_time", "patience", "eval_every", "eval_chars", "device", "threads",
             "precision", "compile"}


@dataclass
class TrainResult:
    steps: int
    epoch: float
    best_val_loss: float
    last_val_loss: float
    stopped_by: str  # "max-steps", "max-epochs", "max-time", "patience", "interrupt"
    run_dir: Path


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CharnnError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CharnnError("--device mps was asked for but Apple's MPS is not available; use --device cpu or auto")
    return torch.device(name)


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


def make_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimiser, in its fastest implementation for where the weights are.

    On the CPU PyTorch defaults to one small kernel per tensor and per operation; the fused
    AdamW (one kernel over every tensor) takes 0.4 ms instead of 1.2-1.5 ms per step of the
    default preset, which is 4% of a step. RMSprop has no fused kernel: its multi-tensor one.
    """
    t = cfg.train
    if t.optimizer == "rmsprop":  # the paper's optimiser, with char-rnn's decay rate 0.95
        return torch.optim.RMSprop(model.parameters(), lr=t.lr, alpha=0.95, eps=1e-8, foreach=True)
    device = next(model.parameters()).device.type
    return torch.optim.AdamW(model.parameters(), lr=t.lr, betas=(0.9, 0.99), weight_decay=t.weight_decay,
                             fused=device in ("cpu", "cuda", "mps") or None)


class _StopFlag:
    """First Ctrl-C asks the loop to stop at the next step boundary; a second one aborts."""

    def __init__(self):
        self.set = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


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


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def _restore_rng(tensors) -> None:
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


class _Loss(torch.nn.Module):
    """The model's loss as a forward(), the call DistributedDataParallel hooks into."""

    def __init__(self, model: CharRNN):
        super().__init__()
        self.model = model

    def forward(self, x, y, state):
        return self.model.loss(x, y, state)


def _streams(state, first: int, count: int):
    """This process's streams of a global (L, B, H) state."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s[:, first:first + count].contiguous() for s in state)
    return state[:, first:first + count].contiguous()


STOP_REASONS = ("", "max-steps", "max-epochs", "max-time", "patience", "interrupt")


def train(cfg: RunConfig, out: str | Path, resume: bool = False, init_from: str | Path | None = None,
          overrides: dict | None = None, progress: bool | None = None,
          on_step: Callable[[int], bool] | None = None) -> TrainResult:
    """Train (or resume) a run in directory `out`.

    overrides: training settings given explicitly on a resume (only RESUMABLE ones may change).
    on_step(step) -> True asks the loop to stop as if interrupted (used by tests).
    Under torchrun, each process trains its share of the streams (see charnn.distributed).
    """
    dd = Dist()
    try:
        return _train(cfg, out, resume, init_from, overrides, progress, on_step, dd)
    finally:
        dd.close()


def _train(cfg, out, resume, init_from, overrides, progress, on_step, dd: Dist) -> TrainResult:
    out = Path(out)
    start_meta, start_tensors = {}, {}
    if resume:
        if not (out / ckpt.LAST).is_file():
            raise CharnnError(f"--resume: {out} holds no {ckpt.LAST} to resume from; drop --resume to start a new run")
        saved = ckpt.load(out, "last")
        bad = sorted(k for k in (overrides or {}) if k not in RESUMABLE)
        if bad:
            raise CharnnError(f"--resume continues the run as configured; these cannot change: "
                              f"{', '.join('--' + k.replace('_', '-') for k in bad)}")
        cfg = saved.config
        for k, v in (overrides or {}).items():
            setattr(cfg.train, k, v)
        cfg.validate()
        start_meta, start_tensors = saved.meta, saved.tensors
        if "step" not in start_meta:
            raise CharnnError(f"{out / ckpt.LAST} holds no training state to resume from")
    else:
        cfg.validate()
        if (out / ckpt.LAST).exists() or (out / ckpt.BEST).exists():
            raise CharnnError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")

    device = dd.device(pick_device(cfg.train.device))
    dd.start(device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    enc = prepare(cfg.data.text, cfg.data.include, cfg.data.unit, cfg.data.encoding_errors, cfg.data.seed)
    if resume and start_meta.get("data_key") not in (None, enc.key):
        raise CharnnError(f"the text {cfg.data.text} has changed since this run started; "
                          f"resume needs the same text (or start a new run with --init-from {out})")
    vocab = enc.vocab
    init_weights = None
    if resume:
        vocab = saved.vocab
        enc = enc.remap(vocab, "--init-from: the new text" if not resume else "the text")
    elif init_from is not None:
        source = ckpt.load(init_from, "best")
        vocab = source.vocab
        if vocab.unit != cfg.data.unit:
            raise CharnnError(f"--init-from: the model reads {vocab.unit} units but --unit is {cfg.data.unit}")
        enc = enc.remap(vocab, "--init-from: the new text" if not resume else "the text")
        cfg.model = source.config.model
        init_weights = source.weights
    embed_std = 1.0
    if resume or init_from is not None:  # the saved model's shape, as it was trained
        cfg.model.vocab_size = len(vocab)
    else:
        asked = cfg.model.embed
        embed_std = cfg.model.fit_vocab(len(vocab))
        if cfg.model.embed != asked and dd.main:
            info(f"the embedding is {cfg.model.embed} wide, not {asked}: the text has {cfg.model.embed} symbols, "
                 f"and a wider embedding represents nothing more")

    splits = enc.splits(cfg.data.split)
    batcher = StreamBatcher(splits["train"], cfg.train.batch_size, cfg.train.seq_len)
    first, per = dd.shard(batcher.batch_size)  # this process's streams of the global batch
    if len(splits["val"]) < 2:
        warn("the validation split is empty: no validation loss, best checkpoint follows training loss")

    torch.manual_seed(cfg.train.seed)
    model = CharRNN(cfg.model, embed_std).to(device)
    if init_weights is not None:
        model.load_state_dict(init_weights)
    if resume:
        model.load_state_dict(saved.weights)
    opt = make_optimizer(cfg, model)
    if resume:
        ckpt.optimizer_from_tensors(opt, start_tensors, start_meta["optimizer"])
        _restore_rng(start_tensors)

    net = dd.wrap(_Loss(model), device)  # DDP: rank 0's initial weights are broadcast here
    if cfg.train.compile:  # checkpoints keep saving `model` itself, so their keys do not change
        net = torch.compile(net)
    if dd.main:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.write_text_atomic(out / "config.json", cfg.to_json() + "\n")
        ckpt.write_text_atomic(out / "vocab.json", vocab.to_json() + "\n")

    m = start_meta
    step = m.get("step", 0)
    epoch = m.get("epoch", 0)
    step_in_epoch = m.get("step_in_epoch", 0)
    best_val = m.get("best_val_loss", math.inf)
    last_val = m.get("last_val_loss", math.inf)
    evals_since_best = m.get("evals_since_best", 0)
    elapsed_before = m.get("elapsed", 0.0)
    state = _streams(_state_from(start_tensors, device), first, per)
    t = cfg.train
    bpe = batcher.steps_per_epoch
    chars_per_step = batcher.batch_size * batcher.seq_len

    def progress_frac() -> float:
        fr = []
        if t.max_steps:
            fr.append(step / t.max_steps)
        if t.max_time:
            fr.append((elapsed_before + time.perf_counter() - t0) / t.max_time)
        if t.max_epochs:
            fr.append((epoch + step_in_epoch / bpe) / t.max_epochs)
        return max(fr) if fr else 0.0

    def run_eval() -> float:  # on rank 0; the others get its number
        data = splits["val"] if len(splits["val"]) >= 2 else splits["train"]
        val = evaluate(model, data, seq_len=min(256, max(t.seq_len, 64)), max_chars=t.eval_chars).loss if dd.main else 0.0
        return dd.broadcast(val, device)

    judge = {}  # the training split's substring index, built at the first snapshot

    def snapshot(val_loss: float | None) -> None:
        if not dd.main:
            return
        text = sample_text(model, vocab, length=t.snapshot_chars, seed=t.seed + step, temperature=0.8)[0]
        rec = {"step": step, "epoch": round(epoch + step_in_epoch / bpe, 4), "train_loss": train_loss,
               "val_loss": val_loss, "temperature": 0.8, "text": text}
        if len(splits["train"]) <= SNAPSHOT_METRICS_MAX_CHARS:  # how much of the sample is copied
            if not judge:
                train_text = vocab.decode(splits["train"])
                judge["index"] = SubstringIndex(train_text)
                judge["words"] = set(re.findall(r"\w+", train_text))
            rec.update(snapshot_metrics(text, judge["index"], judge["words"]))
        with open(out / "samples.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    def log(rec: dict) -> None:
        if not dd.main:
            return
        with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")

    def save_last(finished: str = "") -> None:
        # every process takes part in gathering the carried state; rank 0 writes
        full = None
        if state is not None:
            full = tuple(dd.gather_streams(s) for s in state) if isinstance(state, tuple) else dd.gather_streams(state)
        if not dd.main:
            return
        opt_tensors, opt_json = ckpt.optimizer_to_tensors(opt)
        meta = {"step": step, "epoch": epoch, "step_in_epoch": step_in_epoch, "best_val_loss": best_val,
                "last_val_loss": last_val, "evals_since_best": evals_since_best,
                "elapsed": elapsed_before + time.perf_counter() - t0, "optimizer": opt_json,
                "data_key": enc.key, "stopped_by": finished,
                "params": model.num_params, "batch_size": batcher.batch_size, "seq_len": batcher.seq_len}
        ckpt.save(out / ckpt.LAST, cfg, vocab, model, meta, {**opt_tensors, **_rng_tensors(), **_state_tensors(full)})

    # progress None: tqdm shows a bar only on a terminal; elsewhere one line per evaluation.
    bar = tqdm(total=t.max_steps or None, initial=step, disable=(progress is False or not dd.main) or None, unit="step",
               dynamic_ncols=True, leave=True, desc="train")
    if bar.disable and progress is not False and dd.main:
        info(f"training {cfg.model.cell} {cfg.model.layers}x{cfg.model.hidden} ({model.num_params:,} parameters) "
             f"on {len(splits['train']):,} characters, {device}")
    train_loss = float("nan")
    stopped_by = ""
    t0 = time.perf_counter()
    window_t, window_chars = time.perf_counter(), 0
    speed = 0.0
    model.train()
    with _StopFlag() as flag:
        while True:
            cur_epoch = epoch + step_in_epoch / bpe
            if t.max_steps and step >= t.max_steps:
                stopped_by = "max-steps"
            elif t.max_epochs and cur_epoch >= t.max_epochs:
                stopped_by = "max-epochs"
            elif t.max_time and elapsed_before + time.perf_counter() - t0 >= t.max_time:
                stopped_by = "max-time"
            elif t.patience and evals_since_best >= t.patience:
                stopped_by = "patience"
            elif flag.set or (on_step is not None and step > 0 and on_step(step)):
                stopped_by = "interrupt"
            if dd.active:  # rank 0 decides for everyone (clocks and signals differ)
                stopped_by = STOP_REASONS[int(dd.broadcast(STOP_REASONS.index(stopped_by), device))]
            if stopped_by:
                break
            if step_in_epoch >= bpe:  # an epoch ends: the streams start over from zero state
                epoch += 1
                step_in_epoch = 0
                state = None
            x, y = batcher.batch(step_in_epoch)
            if dd.active:
                x, y = x[first:first + per], y[first:first + per]
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            lr = lr_at(cfg, step, epoch + step_in_epoch / bpe, progress_frac())
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16"):
                loss, state = net(x, y, state)
            if t.precision == "bf16":  # carry the state in fp32 so that checkpoints and resumes see one dtype
                state = tuple(s.float() for s in state) if isinstance(state, tuple) else state.float()
            state = detach_state(state)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clamp:
                for p in model.parameters():
                    p.grad.clamp_(-t.grad_clamp, t.grad_clamp)
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip, foreach=True)
            opt.step()
            step += 1
            step_in_epoch += 1
            window_chars += chars_per_step
            train_loss = dd.mean(loss.detach()).item()  # the global batch's loss
            if not math.isfinite(train_loss):
                save_last("diverged")
                raise CharnnError(f"training diverged at step {step} (loss {train_loss}); lower --lr "
                                  f"(now {t.lr:g}) and start again")

            now = time.perf_counter()
            if now - window_t >= 1.0:  # chars/s over the last second or so
                speed = window_chars / (now - window_t)
                window_t, window_chars = now, 0
            cur_epoch = epoch + step_in_epoch / bpe
            if step % 10 == 0:
                log({"step": step, "epoch": round(cur_epoch, 4), "lr": lr, "train_loss": train_loss,
                     "chars_per_s": round(speed), "elapsed": round(elapsed_before + now - t0, 3)})
            val = None
            if step % t.eval_every == 0:
                val = last_val = run_eval()
                log({"step": step, "epoch": round(cur_epoch, 4), "val_loss": val, "val_bpc": val / math.log(2),
                     "elapsed": round(elapsed_before + time.perf_counter() - t0, 3)})
                if val < best_val:
                    best_val, evals_since_best = val, 0
                    if dd.main:
                        ckpt.save(out / ckpt.BEST, cfg, vocab, model, {"step": step, "val_loss": val})
                else:
                    evals_since_best += 1
                if bar.disable and progress is not False and dd.main:
                    info(f"step {step}  epoch {cur_epoch:.2f}  train {train_loss:.4f}  val {val:.4f} "
                         f"({val / math.log(2):.3f} bpc)  {speed:,.0f} chars/s")
            if step in t.snapshot_steps or val is not None:
                snapshot(val)
            if t.max_time and not t.max_steps and step > 5:
                frac = progress_frac()
                bar.total = max(step + 1, int(step / max(frac, 1e-9)))
            bar.set_postfix_str(
                f"loss {train_loss:.3f} val {last_val:.3f} ({last_val / math.log(2):.2f} bpc) {speed:,.0f} ch/s",
                refresh=False)
            bar.update(1)

    bar.close()
    if stopped_by != "interrupt" and step % t.eval_every != 0:
        last_val = run_eval()
        log({"step": step, "val_loss": last_val, "val_bpc": last_val / math.log(2), "final": True})
        if last_val < best_val:
            best_val = last_val
            if dd.main:
                ckpt.save(out / ckpt.BEST, cfg, vocab, model, {"step": step, "val_loss": last_val})
            evals_since_best = 0
    if dd.main and not (out / ckpt.BEST).exists():  # interrupted before any evaluation: best is what we have
        ckpt.save(out / ckpt.BEST, cfg, vocab, model, {"step": step, "val_loss": None})
    save_last(stopped_by)
    return TrainResult(step, epoch + step_in_epoch / bpe, best_val, last_val, stopped_by, out)
