"""The one save / load of a run: weights, config, vocabulary and training state, never pickle.

A run directory holds:
- ``config.json`` and ``vocab.json``: the resolved configuration and vocabulary, for people;
- ``last.safetensors``: the latest weights plus the full training state (optimizer tensors,
  every RNG state, the carried hidden state), with config, vocabulary and counters as JSON in
  the safetensors metadata, so the file alone can resume training or sample;
- ``best.safetensors``: the weights with the best validation loss, with config and vocabulary.

Every file is written to a temporary name and renamed into place, so a crash mid-write never
leaves a broken checkpoint. Loading uses safetensors and JSON only: nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from charnn.config import RunConfig
from charnn.errors import CharnnError
from charnn.model import CharRNN
from charnn.vocab import Vocab

FORMAT = "charnn-checkpoint-1"
LAST = "last.safetensors"
BEST = "best.safetensors"


@dataclass
class Checkpoint:
    config: RunConfig
    vocab: Vocab
    weights: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)  # step, epoch, val loss, ... (JSON)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # optimizer / rng / state
    path: Path | None = None

    def build_model(self, device: str | torch.device = "cpu") -> CharRNN:
        self.config.model.vocab_size = len(self.vocab)
        model = CharRNN(self.config.model)
        try:
            model.load_state_dict(self.weights)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise CharnnError(f"the weights in {self.path} do not fit its own configuration ({first})") from None
        return model.to(device)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save(path: Path, config: RunConfig, vocab: Vocab, model: torch.nn.Module, meta: dict,
         extra: dict[str, torch.Tensor] | None = None) -> None:
    """Write one checkpoint file atomically. `extra` holds training-state tensors."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for k, v in (extra or {}).items():
        tensors[k] = v.detach().cpu().contiguous().clone()
    metadata = {"format": FORMAT, "config": config.to_json(), "vocab": vocab.to_json(), "meta": json.dumps(meta)}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def resolve_path(where: str | Path, which: str = "best") -> Path:
    """A run directory (its best checkpoint, else its last) or a checkpoint file."""
    p = Path(where)
    if p.is_file():
        return p
    if not p.is_dir():
        raise CharnnError(f"no such run directory or checkpoint: {where}")
    order = [BEST, LAST] if which == "best" else [LAST, BEST] if which == "last" else [which]
    for name in order:
        if (p / name).is_file():
            return p / name
    raise CharnnError(f"{where} holds no checkpoint ({' or '.join(order)}); train into it first with charnn train ... --out {where}")


def load(where: str | Path, which: str = "best") -> Checkpoint:
    path = resolve_path(where, which)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            md = f.metadata() or {}
            if md.get("format") != FORMAT:
                raise CharnnError(f"{path} is not a charnn checkpoint (no '{FORMAT}' marker)")
            weights, tensors = {}, {}
            for k in f.keys():
                if k.startswith("model."):
                    weights[k[len("model."):]] = f.get_tensor(k)
                else:
                    tensors[k] = f.get_tensor(k)
    except (SafetensorError, OSError, ValueError) as e:
        raise CharnnError(f"cannot read checkpoint {path}: {e}") from None
    try:
        meta = json.loads(md.get("meta", "{}"))
    except json.JSONDecodeError:
        raise CharnnError(f"checkpoint {path} has damaged metadata") from None
    return Checkpoint(RunConfig.from_json(md["config"]), Vocab.from_json(md["vocab"]), weights, meta, tensors, path)


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
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


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], js: dict) -> None:
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for k, v in js.get("scalars", {}).items():
        idx, name = k.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": js["param_groups"]})
