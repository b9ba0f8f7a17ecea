"""`charnn export`: a trained model for other runtimes.

- ``web``: a folder a browser opens from disk (``index.html`` + ``model.js``), sampling with a
  small JavaScript step of the same equations; ``model.json`` + ``weights.bin`` for other programs.
- ``onnx``: one step as an ONNX graph (ids and every layer's state in, logits and the new state
  out), for onnxruntime and friends (the ``onnx`` package is an optional extra).

Every file is written atomically, and a folder holding files charnn did not write is refused.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import torch

from charnn import checkpoint as ckpt
from charnn.errors import CharnnError
from charnn.files import refuse_foreign, write_atomic
from charnn.vocab import TokenVocab
from charnn.web.pages import _fill, _json_for_script

WEB_MARKER = b'<meta name="generator" content="charnn exported model">'
JS_MARKER = b"// charnn exported model"
ONNX_MARKER = b"charnn"  # the producer name in the graph's header
FORMAT = "charnn-web-1"


def _tensors(model) -> tuple[dict, bytes]:
    """Every weight as little-endian float32, one after another: {name: {shape, offset}}, bytes."""
    layout, parts, offset = {}, [], 0
    for name, t in model.state_dict().items():
        a = t.detach().cpu().float().numpy().astype("<f4")
        layout[name] = {"shape": list(a.shape), "offset": offset}
        parts.append(a.tobytes())
        offset += a.nbytes
    return layout, b"".join(parts)


def _out_dir(out: Path, marker_files: dict[str, bytes]) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CharnnError(f"--out {out} is a file; give a folder for the export")
    if not out.parent.exists():
        raise CharnnError(f"the folder {out.parent} does not exist; create it or choose another --out")
    for name, marker in marker_files.items():
        refuse_foreign(out / name, marker)
    out.mkdir(exist_ok=True)
    return out


def _no_labels(cfg) -> None:
    if cfg.labels:
        raise CharnnError(
            "this model is conditioned on labels (--label), which the exports do not carry yet; "
            "sample it with charnn sample --label NAME"
        )


def export_web(run, out, which: str = "best") -> list[Path]:
    loaded = ckpt.load(run, which)
    if loaded.vocab.unit == "bpe":  # the page encodes and decodes characters; it has no tokenizer
        raise CharnnError(
            f"{loaded.path} reads byte-pair tokens (--unit bpe), and the web export runs character "
            f"and byte models only; use --format onnx (model.json then holds the tokenizer)"
        )
    model = loaded.build_model("cpu")
    cfg = loaded.config.model
    _no_labels(cfg)
    out = _out_dir(out, {"index.html": WEB_MARKER, "model.js": JS_MARKER, "model.json": b'"format": "' + FORMAT.encode()})
    layout, blob = _tensors(model)
    about = {
        "format": FORMAT,
        "config": {
            "cell": cfg.cell,
            "layers": cfg.layers,
            "hidden": cfg.hidden,
            "embed": cfg.embed,
            "vocab_size": len(loaded.vocab),
            "heads": cfg.heads,
            "block": cfg.block,
            "describe": cfg.describe(),
        },
        "unit": loaded.vocab.unit,
        "vocab": loaded.vocab.codes.tolist(),
        "tensors": layout,
        "weights": "weights.bin (little-endian float32, at each tensor's offset in bytes)",
        "step": loaded.meta.get("step"),
        "val_loss": loaded.meta.get("val_loss"),
    }
    script = dict(about, data=base64.b64encode(blob).decode())
    title = f"charnn: {Path(run).resolve().name} ({cfg.describe()})"
    written = [
        write_atomic(out / "weights.bin", blob),
        write_atomic(out / "model.json", json.dumps(about, indent=1) + "\n"),
        write_atomic(out / "model.js", f"{JS_MARKER.decode()}\nwindow.CHARNN_MODEL = {_json_for_script(script)};\n"),
        write_atomic(out / "index.html", _fill("export.html", {"__TITLE__": html.escape(title)})),
    ]
    return written


class _OneStep(torch.nn.Module):
    """ids (B,) int64 and the state (L, B, H) [, (L, B, H)] -> logits (B, V) and the new state."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids, h, c=None):
        state = (h, c) if c is not None else h
        logits, new = self.model(ids[:, None], state)
        if c is not None:
            return logits[:, 0], new[0], new[1]
        return logits[:, 0], new


def export_onnx(run, out, which: str = "best") -> list[Path]:
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it too)
    except ImportError:
        raise CharnnError("--format onnx needs the onnx package: pip install 'charnn[onnx]' (or pip install onnx)") from None
    loaded = ckpt.load(run, which)
    model = loaded.build_model("cpu")
    cfg = loaded.config.model
    _no_labels(cfg)
    out = _out_dir(out, {"model.onnx": ONNX_MARKER, "model.json": b'"format": "charnn-onnx-1"'})
    if not cfg.recurrent:
        return _export_cached_onnx(loaded, model, out)
    step = _OneStep(model).eval()
    ids = torch.zeros(1, dtype=torch.long)
    h = torch.zeros(cfg.layers, 1, cfg.hidden)
    args = (ids, h, torch.zeros_like(h)) if cfg.cell == "lstm" else (ids, h)
    names_in = ["ids", "h", "c"][: len(args)]
    names_out = ["logits", "h_out", "c_out"][: len(args)]
    axes = {"ids": {0: "batch"}, "logits": {0: "batch"}}
    axes.update({n: {1: "batch"} for n in names_in[1:] + names_out[1:]})
    import io
    import warnings

    import onnx

    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter: it turns nn.LSTM / GRU / RNN into ONNX's own LSTM / GRU / RNN
        # operators with the state as inputs (its warnings are about batch sizes this graph handles).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            step,
            args,
            buf,  # type: ignore[arg-type]  # a file object works (torch's docs)
            input_names=names_in,
            output_names=names_out,
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    graph = onnx.load_from_string(buf.getvalue())
    graph.producer_name, graph.producer_version = "charnn", "1"
    graph.doc_string = f"one step of a charnn {cfg.cell} {cfg.layers}x{cfg.hidden}; see model.json"
    about = {
        "format": "charnn-onnx-1",
        "inputs": names_in,
        "outputs": names_out,
        "config": {
            "cell": cfg.cell,
            "layers": cfg.layers,
            "hidden": cfg.hidden,
            "embed": cfg.embed,
            "vocab_size": len(loaded.vocab),
        },
        "unit": loaded.vocab.unit,
        "vocab": loaded.vocab.codes.tolist(),
        **({"tokenizer": json.loads(loaded.vocab.json)} if isinstance(loaded.vocab, TokenVocab) else {}),
        "state": "zeros of shape (layers, batch, hidden) at the start; feed each step's h_out (and c_out) back",
    }
    return [
        write_atomic(out / "model.onnx", graph.SerializeToString()),
        write_atomic(out / "model.json", json.dumps(about, indent=1) + "\n"),
    ]


class _CachedStep(torch.nn.Module):
    """One character of a transformer, its key/value cache in and out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids, kv):
        h, kv, _ = self.model.trunk(ids[:, None], kv)
        return self.model.head(h)[:, 0], kv


def _export_cached_onnx(loaded, model, out: Path) -> list[Path]:
    """A transformer's step: ids (batch,) and kv (layers, 2, batch, heads, past, head_dim) in,
    logits (batch, V) and kv_out (past + 1) out. The window's slide is the caller's, in a few lines
    (model.json says how), so that the graph stays one step and its logits equal charnn's."""
    import io
    import warnings

    import onnx

    cfg = loaded.config.model
    ids = torch.zeros(1, dtype=torch.long)
    kv = torch.zeros(cfg.layers, 2, 1, cfg.heads, 1, cfg.embed // cfg.heads)  # traced with a past of 1: the cache path
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes this graph reads from its inputs
        torch.onnx.export(
            _CachedStep(model).eval(),
            (ids, kv),
            buf,  # type: ignore[arg-type]  # as above
            input_names=["ids", "kv"],
            output_names=["logits", "kv_out"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={
                "ids": {0: "batch"},
                "logits": {0: "batch"},
                "kv": {2: "batch", 4: "past"},
                "kv_out": {2: "batch", 4: "past_and_one"},
            },
        )
    graph = onnx.load_from_string(buf.getvalue())
    graph.producer_name, graph.producer_version = "charnn", "1"
    graph.doc_string = f"one step of a charnn {cfg.describe()}; see model.json"
    about = {
        "format": "charnn-onnx-1",
        "inputs": ["ids", "kv"],
        "outputs": ["logits", "kv_out"],
        "config": {
            "cell": cfg.cell,
            "layers": cfg.layers,
            "heads": cfg.heads,
            "embed": cfg.embed,
            "block": cfg.block,
            "vocab_size": len(loaded.vocab),
        },
        "unit": loaded.vocab.unit,
        "vocab": loaded.vocab.codes.tolist(),
        **({"tokenizer": json.loads(loaded.vocab.json)} if loaded.vocab.unit == "bpe" else {}),
        "state": (
            f"kv: zeros of shape (layers, 2, batch, heads, 0, embed / heads) at the start; feed each step's "
            f"kv_out back. The cache holds at most block = {cfg.block} characters: before a step that "
            f"would pass it, start from an empty kv again and feed the last {cfg.block // 2} characters "
            f"(block // 2; their logits are not needed). That is charnn's sliding window, so the "
            f"logits equal charnn's"
        ),
    }
    return [
        write_atomic(out / "model.onnx", graph.SerializeToString()),
        write_atomic(out / "model.json", json.dumps(about, indent=1) + "\n"),
    ]


def reference_logits(run, text: str, which: str = "best") -> np.ndarray:
    """(N, V) logits after each character of text, from PyTorch (what the exports are checked against)."""
    loaded = ckpt.load(run, which)
    model = loaded.build_model("cpu")
    ids = torch.as_tensor(np.asarray(loaded.vocab.encode(text), dtype=np.int64))[None]
    with torch.no_grad():
        logits, _ = model(ids)
    return logits[0].numpy()
