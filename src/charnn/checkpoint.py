"""The one save / load of a run: weights, config, vocabulary and training state, never pickle.

A run directory holds:
- ``config.json`` and ``vocab.json``: the resolved configuration and vocabulary, for people;
- ``last.safetensors``: the latest weights plus the full training state (optimizer tensors,
  every RNG state, the carried hidden state), with config, vocabulary and counters as JSON in
  the safetensors metadata, so the file alone can resume training or sample;
- ``best.safetensors``: the weights with the best validation loss, with config and vocabulary.

Every file is written to a temporary name, fsynced and renamed into place (``files.write_atomic``),
so a crash mid-write never leaves a broken checkpoint. Each checkpoint carries its run's id and a
checksum of its tensors, and loading refuses a changed byte, a truncated file or a model larger
than its tensors. Loading uses safetensors and JSON only: nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import safetensors.torch
import torch
from safetensors import SafetensorError, safe_open

from charnn.config import RunConfig
from charnn.errors import CharnnError
from charnn.files import write_atomic
from charnn.model import Model, build, expected_shapes
from charnn.vocab import Vocab

FORMAT = "charnn-checkpoint-1"
LAST = "last.safetensors"
BEST = "best.safetensors"


def checksum(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order.

    Kept in the metadata, it makes a changed byte anywhere in the tensors (a flipped bit on disk,
    a file edited by hand) a refused checkpoint instead of silently different samples.
    """
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class Checkpoint:
    config: RunConfig
    vocab: Vocab
    weights: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)  # step, epoch, val loss, ... (JSON)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # optimizer / rng / state
    path: Path | None = None

    def build_model(self, device: str | torch.device = "cpu") -> Model:
        """The model, after checking the tensors' shapes against the configuration (before
        allocating anything) and that every weight is finite."""
        mc = self.config.model
        mc.vocab_size = len(self.vocab)
        try:
            mc.validate()
        except CharnnError as e:
            raise CharnnError(f"{self.path} holds an impossible model configuration ({e})") from None
        want = expected_shapes(mc)
        got = {k: tuple(v.shape) for k, v in self.weights.items()}
        if want != got:
            diff = sorted(set(want) ^ set(got)) or [k for k in want if want[k] != got[k]]
            k = diff[0]
            raise CharnnError(
                f"the weights in {self.path} do not fit its own configuration ({mc.describe()}"
                f", embedding {mc.embed}, {mc.vocab_size} symbols): {k} is "
                f"{got.get(k, 'missing')}, the configuration needs {want.get(k, 'no such tensor')}"
            )
        bad = [k for k, v in self.weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise CharnnError(
                f"{self.path} holds non-finite weights (NaN or inf in {bad[0]}): the run diverged "
                f"before it was saved; use another checkpoint, or resume with a lower --lr"
            )
        model = build(mc)
        model.load_state_dict(self.weights)
        return model.to(device).eval()  # for inference: put in eval mode once, never switched per request


def save(
    path: Path, config: RunConfig, vocab: Vocab, model: torch.nn.Module, meta: dict, extra: dict[str, torch.Tensor] | None = None
) -> None:
    """Write one checkpoint file atomically and durably. `extra` holds training-state tensors.

    The metadata carries the run's id (config.run_id) and a checksum of every tensor.
    """
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for k, v in (extra or {}).items():
        tensors[k] = v.detach().cpu().contiguous().clone()
    metadata = {
        "format": FORMAT,
        "config": config.to_json(),
        "vocab": vocab.to_json(),
        "meta": json.dumps(meta),
        "run_id": config.run_id,
        "checksum": checksum(tensors),
    }
    # Serialised in memory and written by files.write_atomic (fsync + rename): safetensors'
    # save_file writes in place, without fsync, and creates the file 0600.
    write_atomic(path, safetensors.torch.save(tensors, metadata=metadata))


KEPT = "checkpoints"  # RUN/checkpoints/step-NNNNNNN.safetensors: weights kept over training


def kept_path(run: str | Path, step: int) -> Path:
    return Path(run) / KEPT / f"step-{step:07d}.safetensors"


def kept_steps(run: str | Path) -> list[int]:
    """The steps whose weights a run kept, in order."""
    steps = []
    for p in (Path(run) / KEPT).glob("step-*.safetensors"):
        m = re.fullmatch(r"step-(\d+)\.safetensors", p.name)
        if m:
            steps.append(int(m.group(1)))
    return sorted(steps)


def kept_for_analysis(run: str | Path) -> tuple[list[int], "Checkpoint"]:
    """The kept steps of a run and its last kept checkpoint, for the analyses over training; a run
    that kept none is refused with what to do."""
    steps = kept_steps(run)
    if not steps:
        raise CharnnError(
            f"{run} kept no checkpoints over training; train with --keep-checkpoints snapshots (the "
            f"default) or --keep-every N, then run this again"
        )
    return steps, load(run, f"step:{steps[-1]}")


def parse_which(text: str) -> str:
    """--checkpoint: best, last, or step:N (a kept checkpoint)."""
    if text in ("best", "last") or re.fullmatch(r"step:\d+", text):
        return text
    raise CharnnError(f"--checkpoint {text!r}: use best, last or step:N (a step whose weights the run kept)")


def resolve_path(where: str | Path, which: str = "best") -> Path:
    """A checkpoint file, or a run directory's checkpoint: "best", "last" (only that file),
    "latest" (last, else best) or "step:N" (kept over training)."""
    p = Path(where)
    if p.is_file():
        return p
    if not p.is_dir():
        raise CharnnError(f"no such run directory or checkpoint: {where}")
    if which.startswith("step:"):
        step = int(parse_which(which)[5:])
        if kept_path(p, step).is_file():
            return kept_path(p, step)
        kept = kept_steps(p)
        raise CharnnError(
            f"{where} kept no checkpoint at step {step}; "
            + (
                f"it kept steps {', '.join(map(str, kept))}"
                if kept
                else "it kept none (runs keep them at steps 100, 300, 500, 700, 1200, 2000, then each doubling)"
            )
        )
    order = {"best": [BEST, LAST], "last": [LAST], "latest": [LAST, BEST]}.get(which, [which])
    for name in order:
        if (p / name).is_file():
            return p / name
    if which == "last" and (p / BEST).is_file():
        raise CharnnError(f"{where} holds no {LAST} (only {BEST}); drop --checkpoint last to use the best one")
    raise CharnnError(
        f"{where} holds no checkpoint ({' or '.join(order)}); train into it first with charnn train ... --out {where}"
    )


def load(where: str | Path, which: str = "best") -> Checkpoint:
    """Read and verify a checkpoint: its marker, its metadata and the checksum of its tensors."""
    path = resolve_path(where, which)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            md = f.metadata() or {}
            if md.get("format") != FORMAT:
                raise CharnnError(f"{path} is not a charnn checkpoint (no '{FORMAT}' marker)")
            for key in ("config", "vocab"):
                if key not in md:
                    raise CharnnError(f"{path} has no {key} in its metadata: it is damaged or was not written by charnn")
            raw = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CharnnError(f"cannot read checkpoint {path}: it is damaged, cut short or not a checkpoint ({detail})") from None
    if "checksum" in md and checksum(raw) != md["checksum"]:
        raise CharnnError(
            f"{path} is damaged: its tensors do not match the checksum they were saved with; "
            f"use another checkpoint (charnn check {path.parent} lists the usable ones)"
        )
    weights = {k[len("model.") :]: v for k, v in raw.items() if k.startswith("model.")}
    tensors = {k: v for k, v in raw.items() if not k.startswith("model.")}
    try:
        meta = json.loads(md.get("meta", "{}"))
        if not isinstance(meta, dict):
            raise ValueError
    except (json.JSONDecodeError, ValueError):
        raise CharnnError(f"checkpoint {path} has damaged metadata") from None
    config = RunConfig.from_json(md["config"])
    config.run_id = md.get("run_id", config.run_id)
    return Checkpoint(config, Vocab.from_json(md["vocab"]), weights, meta, tensors, path)


class Stateful(Protocol):
    """An optimiser as a checkpoint sees it: torch's, or charnn.optim.MuonAdamW (two of torch's)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


def optimizer_to_tensors(opt: Stateful) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors (for safetensors) and plain values (for JSON)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{name}"] = v
            else:
                scalars[f"{idx}.{name}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(opt: Stateful, tensors: dict[str, torch.Tensor], js: dict) -> None:
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for k, v in js.get("scalars", {}).items():
        idx, name = k.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": js["param_groups"]})


@dataclass
class Finding:
    name: str  # a file of the run directory
    ok: bool
    says: str


def check_run(run: str | Path) -> list[Finding]:
    """Verify every file of a run directory: each checkpoint's checksum, shapes and finite weights,
    that they all belong to one run, and what each is good for."""
    run = Path(run)
    if not run.is_dir():
        raise CharnnError(f"no such run directory: {run}")
    found: list[Finding] = []
    ids: dict[str, str] = {}
    try:
        cfg = RunConfig.from_json((run / "config.json").read_text(encoding="utf-8"))
        ids["config.json"] = cfg.run_id
        found.append(
            Finding("config.json", True, f"run {cfg.run_id or '(no id: written before run ids)'}, {cfg.model.describe()}")
        )
    except (OSError, CharnnError) as e:
        found.append(Finding("config.json", False, f"unreadable ({getattr(e, 'strerror', None) or e})"))
    for name in (LAST, BEST):
        if not (run / name).exists():
            found.append(Finding(name, False, "missing"))
            continue
        try:
            c = load(run / name)
            c.build_model()
        except CharnnError as e:
            found.append(Finding(name, False, str(e)))
            continue
        ids[name] = c.config.run_id
        m = c.meta
        if name == LAST:
            usable = "step" in m and "optimizer" in m
            found.append(
                Finding(
                    name,
                    usable,
                    f"step {m.get('step')}; "
                    + (f"resume with: charnn train --resume --out {run}" if usable else "holds no training state"),
                )
            )
        else:
            val = m.get("val_loss")
            found.append(
                Finding(
                    name,
                    True,
                    f"step {m.get('step')}"
                    + (f", validation loss {val:.4f} nats" if isinstance(val, (int, float)) else "")
                    + f"; sample with: charnn sample {run}",
                )
            )
    for step in kept_steps(run):
        name = f"{KEPT}/{kept_path(run, step).name}"
        try:
            c = load(kept_path(run, step))
            c.build_model()
            ids[name] = c.config.run_id
            found.append(Finding(name, True, f"step {step}; sample with: charnn sample {run} --checkpoint step:{step}"))
        except CharnnError as e:
            found.append(Finding(name, False, str(e)))
    known = {v for v in ids.values() if v}
    if len(known) > 1:
        found.append(
            Finding("run id", False, "the files come from different runs: " + ", ".join(f"{k} {v}" for k, v in ids.items()))
        )
    for p in sorted(run.glob(".*.tmp")):
        found.append(Finding(p.name, True, "left by a write that was cut short; ignored, removed by the next train"))
    return found
