"""`charnn serve`: an HTTP API over trained runs, and the page that uses it (FastAPI on uvicorn).

Safety, by construction:
- clients name runs (the served directories' names), never paths: a name is only ever looked up
  in the dictionary of runs given on the command line, so nothing else on disk can be reached;
- every field has a bound (pydantic), and a request body is cut off past MAX_BODY bytes;
  violations are 4xx with a message, and so is any bad input the library refuses (CharnnError);
- model work runs off the event loop in a bounded thread pool; past `workers + queue` requests
  in flight the server answers 503 with Retry-After instead of piling up.

Models are loaded once, in eval mode, and shared by every request (the inference code never
changes a module; state lives in each call). A checkpoint that changes on disk (a run still
training rewrites best.safetensors atomically) is reloaded at the next request that uses it.
The best checkpoint of a run trained with --ngram-mix samples and scores as `charnn sample` and
`charnn eval` do, mixed with its training text's n-gram (counted at the first request that needs
it, again when the checkpoint or RUN/mixture.json changes); `"mix": false` asks for the model alone.
The mixture's code is the study's (the n-gram), which the web layer does not import: the command
line hands it in (``open_runs(..., mixtures=charnn.study.mixture)``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from charnn import checkpoint as ckpt
from charnn.errors import CharnnError
from charnn.evaluate import score_text, string_ids
from charnn.inspect.activations import QUANTITIES, Clamp, record_all
from charnn.model import CharRNN
from charnn.sample import (
    label_numbers,
    next_probs,
    parse_clamp,
    refuse_label_unless_labelled,
    sample_documents,
    sample_text,
    stream,
    stream_document,
)
from charnn.subject import display_chars

MAX_BODY = 2 << 20  # bytes of a request body: a 1 MB text is up to ~1M characters of JSON
MAX_TEXT = 1_000_000  # characters scored by /eval
MAX_SHOWN = 10_000  # characters read by /activations (every cell of a layer comes back for each)
MAX_VALUES = MAX_SHOWN * 512  # values one /activations answer holds: characters x a layer's units
MAX_LENGTH = 10_000  # characters generated per sample
MAX_NUM = 64  # samples per request
TOP = 5  # next-character candidates per position
MAX_CLAMP = 20_000  # characters of a clamp list (a few thousand cells)
KEEP = 8  # checkpoints of one run held in memory at once (a slider over training visits several)
WHICH = r"^(best|last|step:[0-9]{1,12})$"
WHICH_HELP = "best, last or step:N (a kept checkpoint); default: the one the server was started with"
MIX_HELP = (
    "the best checkpoint of a run trained with --ngram-mix: mixed with its training text's n-gram, as charnn "
    "sample and charnn eval read it (false: the model alone, as --no-mix)"
)


# ---- the runs ----------------------------------------------------------------------------------


class Mixtures(Protocol):
    """What serve needs of --ngram-mix (``charnn.study.mixture`` provides it)."""

    def sampler_for(self, loaded, run_dir: Path) -> Any:
        """The run's mixture as a Sampler (its n-gram counted), or None."""

    def about(self, loaded, run_dir: Path) -> dict | None:
        """What RUN/mixture.json says, when it was fitted for this checkpoint (nothing counted)."""


@dataclass
class Served:
    """One run directory, known to clients by its name; its model is (re)loaded when its
    checkpoint file changes."""

    name: str
    folder: Path
    which: str = "best"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _loaded: dict = field(default_factory=dict, repr=False)  # which -> (stamp, Checkpoint, CharRNN)
    mixtures: Mixtures | None = None  # --ngram-mix's code, handed in by the command line (None: models alone)
    _mix_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _mix: tuple = field(default=(None, None), repr=False)  # (the best checkpoint's stamp and mixture, Sampler | None)

    def current(self, which: str | None = None) -> tuple[ckpt.Checkpoint, CharRNN]:
        """The model of `which` (best, last or step:N; default the served one), loaded once and
        again when its file changes; the KEEP most recently used stay loaded."""
        which = which or self.which
        path = ckpt.resolve_path(self.folder, which)
        st = path.stat()
        stamp = (str(path), st.st_mtime_ns, st.st_size)
        with self._lock:
            got = self._loaded.pop(which, None)
            if got is None or got[0] != stamp:
                loaded = ckpt.load(path)
                got = (stamp, loaded, loaded.build_model("cpu"))
            self._loaded[which] = got  # most recent last
            while len(self._loaded) > KEEP:
                self._loaded.pop(next(iter(self._loaded)))
            return got[1], got[2]

    def mixture(self, which: str | None = None):
        """The run's --ngram-mix mixture (a ``study.mixture.Sampler``) when `which` is the best
        checkpoint it was fitted for, else None. Its n-gram is counted from the run's training
        text at the first call (seconds; a warning and None when the text has moved) and kept
        until the checkpoint or the mixture file changes."""
        which = which or self.which
        path = ckpt.resolve_path(self.folder, which)
        loaded, _ = self.current(which)
        if self.mixtures is None or path.name != ckpt.BEST:
            return None
        about = self.mixtures.about(loaded, self.folder)
        if about is None:
            return None
        st = path.stat()
        stamp = (str(path), st.st_mtime_ns, st.st_size, json.dumps(about, sort_keys=True))  # a refitted mixture.json differs
        with self._mix_lock:
            if self._mix[0] != stamp:
                self._mix = (stamp, self.mixtures.sampler_for(loaded, self.folder))
            return self._mix[1]

    def describe(self) -> dict:
        loaded, model = self.current()
        m, c = loaded.meta, loaded.config.model
        best = m.get("best_val_loss", m.get("val_loss"))
        return {
            "name": self.name,
            "cell": c.cell,
            "layers": c.layers,
            "hidden": c.hidden,
            "units": c.units,
            "describe": c.describe(),
            "vocab_size": len(loaded.vocab),
            "params": model.num_params,
            "steps": m.get("step"),
            "best_val_loss": best if best is not None and math.isfinite(best) else None,
            "unit": loaded.vocab.unit,
            "quantities": list(QUANTITIES.get(c.cell, ())),
            "checkpoint": loaded.path.name if loaded.path else None,
            "labels": m.get("labels") or [],
            "documents": bool(m.get("lead_in")),
            "kept_steps": ckpt.kept_steps(self.folder),
            "mixture": self.mixtures.about(loaded, self.folder) if self.mixtures is not None else None,
        }


def open_runs(folders, which: str = "best", mixtures: Mixtures | None = None) -> dict[str, Served]:
    """The runs to serve, by directory name; each is loaded now, so a bad one fails at start.
    mixtures: --ngram-mix's code (``charnn.study.mixture``), for runs trained with it."""
    runs: dict[str, Served] = {}
    for f in folders:
        folder = Path(f)
        if not folder.is_dir():
            raise CharnnError(f"{f} is not a run directory; serve the folders charnn train --out wrote")
        name = folder.resolve().name
        if name in runs:
            raise CharnnError(
                f"two runs are named {name!r} ({runs[name].folder} and {f}); clients name runs by "
                f"their folder's name, so rename or copy one"
            )
        runs[name] = Served(name, folder, which, mixtures=mixtures)
        runs[name].current()
    if not runs:
        raise CharnnError("give at least one run directory to serve")
    return runs


# ---- requests ------------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SampleRequest(_Body):
    """The options of `charnn sample`, with its defaults."""

    prime: str = Field("", max_length=MAX_LENGTH, description="text to start from (included in each sample)")
    temperature: float = Field(0.8, ge=0, le=100, allow_inf_nan=False, description="0 picks the most likely")
    top_k: int = Field(0, ge=0, le=1 << 20, description="sample from the k most likely (0: off)")
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False, description="nucleus threshold (1: off)")
    length: int = Field(500, ge=0, le=MAX_LENGTH, description="characters to generate per sample")
    num: int = Field(1, ge=1, le=MAX_NUM, description="samples drawn together")
    seed: int = Field(0, ge=0, le=(1 << 63) - 1, description="same seed, same text")
    stop: str | None = Field(None, min_length=1, max_length=100, description="end a sample after this string")
    clamp: str | None = Field(
        None,
        max_length=MAX_CLAMP,
        description="LAYER:CELL=VALUE[,...]: hold cells at a "
        "value at every step (an LSTM's tanh(c), a GRU's or RNN's h), as charnn sample --clamp",
    )
    checkpoint: str | None = Field(None, pattern=WHICH, description=WHICH_HELP)
    label: str | None = Field(
        None, min_length=1, max_length=200, description="a run trained with --label: write documents in this label's style"
    )
    mix: bool = Field(True, description=MIX_HELP)


class EvalRequest(_Body):
    text: str = Field(..., min_length=2, max_length=MAX_TEXT)
    checkpoint: str | None = Field(None, pattern=WHICH, description=WHICH_HELP)
    mix: bool = Field(True, description=MIX_HELP)


class NextRequest(_Body):
    text: str = Field(
        "", max_length=MAX_SHOWN, description="what the model has read (empty: its start; a run of documents: a document's start)"
    )
    temperatures: list[float] = Field([0.2, 0.5, 1.0, 1.5], min_length=1, max_length=8)
    top: int = Field(8, ge=1, le=50)
    clamp: str | None = Field(None, max_length=MAX_CLAMP)
    checkpoint: str | None = Field(None, pattern=WHICH, description=WHICH_HELP)
    label: str | None = Field(None, min_length=1, max_length=200, description="a run trained with --label: in this label's style")
    mix: bool = Field(True, description=MIX_HELP)


class ActivationsRequest(_Body):
    text: str = Field(..., min_length=1, max_length=MAX_SHOWN)
    layer: int = Field(0, ge=0, le=255)
    quantity: Literal["h", "c", "i", "f", "g", "o", "r", "z", "n", "m"] = "c"
    clamp: str | None = Field(None, max_length=MAX_CLAMP, description="cells held while reading, as in /sample")
    checkpoint: str | None = Field(None, pattern=WHICH, description=WHICH_HELP)
    label: str | None = Field(
        None, min_length=1, max_length=200, description="a run trained with --label: read in this label's style"
    )


# ---- the work (run in the pool) ------------------------------------------------------------------


def _ids(loaded: ckpt.Checkpoint, text: str) -> np.ndarray:
    return np.asarray(loaded.vocab.encode(text), dtype=np.int64)  # unknown characters: CharnnError


def do_sample(run: Served, req: SampleRequest) -> dict:
    loaded, model = run.current(req.checkpoint)
    if loaded.meta.get("lead_in"):  # a run of documents: whole documents (in a label's style)
        if req.stop:
            raise CharnnError("a document ends at its end symbol; drop stop")
        docs, capped = sample_documents(
            model,
            loaded.vocab,
            loaded.meta["lead_in"],
            req.num,
            req.length,
            req.prime,
            req.seed,
            *label_numbers(loaded.meta, req.label),
            temperature=req.temperature,
            top_k=req.top_k,
            top_p=req.top_p,
            clamped=parse_clamp(req.clamp, loaded.config.model),
        )
        return {"samples": docs, "capped": capped}
    refuse_label_unless_labelled(loaded.meta, req.label)
    mix = run.mixture(req.checkpoint) if req.mix else None
    texts = sample_text(
        model,
        loaded.vocab,
        length=req.length,
        num=req.num,
        stop=req.stop,
        prime=req.prime,
        seed=req.seed,
        temperature=req.temperature,
        top_k=req.top_k,
        top_p=req.top_p,
        clamped=parse_clamp(req.clamp, loaded.config.model),
        mix=mix,
    )
    return {"samples": [req.prime + t for t in texts], "mixed": mix is not None}


def do_eval(run: Served, req: EvalRequest) -> dict:
    """The text scored as `charnn eval --text` scores a file holding it (``string_ids``: a run of
    documents reads its documents framed as in training, a labelled run each with its label)."""
    loaded, model = run.current(req.checkpoint)
    ids = string_ids(loaded, req.text)
    if len(ids) < 2:
        raise CharnnError("the text holds fewer than 2 characters; nothing to score")
    score = score_text(model, loaded.vocab, ids)
    if not math.isfinite(score.loss):
        raise CharnnError("the model's loss on this text is not finite (its outputs overflow)")
    sampler = run.mixture(req.checkpoint) if req.mix and score.tokens is None else None
    if sampler is not None:  # as charnn eval --json reports it
        score.mixture = sampler.scored(model, ids)
    return score.to_dict()


def do_next(run: Served, req: NextRequest) -> dict:
    loaded, model = run.current(req.checkpoint)
    if any(not (math.isfinite(t) and 0 <= t <= 100) for t in req.temperatures):
        raise CharnnError("each temperature must be from 0 (argmax) to 100")
    mix = run.mixture(req.checkpoint) if req.mix else None
    got = next_probs(
        model,
        loaded.vocab,
        req.text,
        req.temperatures,
        req.top,
        clamped=parse_clamp(req.clamp, loaded.config.model),
        meta=loaded.meta,
        label=req.label,
        mix=mix,
    )
    shown = display_chars(loaded.vocab)
    return {
        "candidates": [shown[i] for i in got["candidates"]],
        "probs": {f"{t:g}": [round(p, 6) for p in ps] for t, ps in got["probs"].items()},
        "mixed": mix is not None,
    }


def do_activations(run: Served, req: ActivationsRequest) -> dict:
    loaded, model = run.current(req.checkpoint)
    cfg = loaded.config.model
    if req.layer >= cfg.layers:
        raise CharnnError(f"layer {req.layer} does not exist: this model has layers 0 to {cfg.layers - 1}")
    if req.quantity not in QUANTITIES[cfg.cell]:
        raise CharnnError(f"a {cfg.cell} has no quantity {req.quantity!r}; it has {', '.join(QUANTITIES[cfg.cell])}")
    label = label_numbers(loaded.meta, req.label)[0]
    chars = _ids(loaded, req.text)
    ids = chars + len(loaded.vocab) * label  # a labelled run reads unit + V * label
    if len(ids) * cfg.units > MAX_VALUES:
        raise CharnnError(
            f"{len(ids):,} characters x {cfg.units} units a layer is too much for one answer; "
            f"send at most {MAX_VALUES // cfg.units:,} characters"
        )
    clamps = Clamp.from_clamped(parse_clamp(req.clamp, cfg), cfg.cell)
    rec = record_all(model, ids, quantities=(req.quantity,), clamps=clamps)
    values = np.round(rec.acts[req.quantity][req.layer].numpy().astype(np.float64), 4)  # (N, H), c as tanh(c)
    logp = rec.logp  # (N, V)
    top_lp, top_id = torch.topk(logp, min(TOP, logp.shape[-1]), dim=-1)
    nxt = torch.from_numpy(chars[1:])
    loss = (-logp[:-1].gather(1, nxt[:, None])[:, 0]).tolist() + [None]
    shown = display_chars(loaded.vocab)
    out = []
    for i, cid in enumerate(chars.tolist()):
        out.append(
            {
                "char": shown[cid],
                "values": values[i].tolist(),
                "top": [{"char": shown[j], "p": round(math.exp(lp), 5)} for lp, j in zip(top_lp[i].tolist(), top_id[i].tolist())],
                "loss": None if loss[i] is None else round(loss[i], 5),
            }
        )
    return {"layer": req.layer, "quantity": req.quantity, "cells": cfg.units, "characters": out}


MAX_RECORDS = 5000  # log records per progress answer (the newest)


def read_log(path: Path, since: int) -> list[dict]:
    """The records of a run's JSON-lines log after step `since` (a line being written is skipped)."""
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] > since:
                    out.append(rec)
    except FileNotFoundError:
        return []
    return out[-MAX_RECORDS:]


def do_progress(run: Served, since: int) -> dict:
    """A run's training so far, from its logs: what the page's Train view draws as the run grows."""
    metrics = read_log(run.folder / "metrics.jsonl", since)
    samples = [
        {k: r.get(k) for k in ("step", "train_loss", "val_loss", "temperature", "text")}
        for r in read_log(run.folder / "samples.jsonl", since)
    ]
    return {
        "metrics": [{k: r[k] for k in ("step", "train_loss", "val_loss", "elapsed") if k in r} for r in metrics],
        "samples": samples[-50:],
    }


# ---- admission and the pool ----------------------------------------------------------------------


class Workers:
    """A bounded pool for model work, and admission control in front of it."""

    def __init__(self, workers: int, queue: int):
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="charnn-model")
        self.limit = max(1, workers) + max(0, queue)
        self.active = 0  # requests admitted and not finished (touched only on the event loop)

    def admit(self) -> None:
        if self.active >= self.limit:
            raise HTTPException(
                503, f"the server is busy ({self.active} requests in progress); try again shortly", headers={"Retry-After": "1"}
            )
        self.active += 1

    def release(self) -> None:
        self.active -= 1

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, partial(fn, *args))


class _LimitBody:
    """ASGI middleware: a request body longer than MAX_BODY bytes ends in 413 before it is parsed."""

    def __init__(self, app, limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _too_large(send, self.limit)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _too_large(send, self.limit)


class _TooLarge(Exception):
    pass


class _RequireToken:
    """ASGI middleware: every request (the page, the API, its schema) carries the server's token,
    as `Authorization: Bearer TOKEN` or `?token=TOKEN` (how the page arrives); else 401."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        auth = dict(scope.get("headers") or []).get(b"authorization", b"")
        given = auth[7:].strip() if auth[:7].lower() == b"bearer " else b""
        if not given:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = (query.get("token") or [""])[0].encode()
        if hmac.compare_digest(given, self.token):
            return await self.app(scope, receive, send)
        body = json.dumps(
            {
                "detail": "this server needs its token: open the address charnn serve printed "
                "(.../?token=...), or send Authorization: Bearer TOKEN"
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _too_large(send, limit: int) -> None:
    body = json.dumps({"detail": f"the request body is over {limit:,} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# ---- the app -------------------------------------------------------------------------------------


def _answer_bad_requests(app: FastAPI) -> None:
    """A request the server refuses gets a 4xx and one message: bad input 400, a malformed body 422."""

    @app.exception_handler(CharnnError)
    async def _bad_input(request: Request, exc: CharnnError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        problems = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
            problems.append(f"{where}: {e.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)


def create_app(runs: dict[str, Served], workers: int = 1, queue: int = 16, token: str | None = None) -> FastAPI:
    """token: when given, every request must carry it (``_RequireToken``)."""
    app = FastAPI(title="charnn", description="Sample, score and look inside character-level language models.", version="1")
    pool = Workers(workers, queue)
    app.state.workers = pool
    app.state.streaming = 0  # samples being streamed now (tests watch it fall back to 0)
    app.add_middleware(_LimitBody)
    if token:
        app.add_middleware(_RequireToken, token=token)  # added last: it runs first
    _answer_bad_requests(app)

    def run_named(name: str) -> Served:
        if name not in runs:
            raise HTTPException(404, f"no run named {name!r}; this server has {', '.join(sorted(runs))}")
        return runs[name]

    async def work(fn, run: Served, req) -> dict:
        pool.admit()
        try:
            return await pool.run(fn, run, req)
        finally:
            pool.release()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        from charnn.web.pages import serve_page

        return HTMLResponse(serve_page())

    @app.get("/api/runs")
    async def list_runs() -> list[dict]:
        return [await pool.run(r.describe) for r in runs.values()]

    @app.get("/api/runs/{name}/progress")
    async def progress(name: str, since: int = Query(0, ge=0, le=1 << 62, description="only records after this step")) -> dict:
        """The run's loss records and sample snapshots (metrics.jsonl, samples.jsonl) after `since`."""
        return await work(do_progress, run_named(name), since)

    @app.post("/api/runs/{name}/sample")
    async def sample(name: str, req: SampleRequest) -> dict:
        return await work(do_sample, run_named(name), req)

    @app.post("/api/runs/{name}/eval")
    async def score(name: str, req: EvalRequest) -> dict:
        return await work(do_eval, run_named(name), req)

    @app.post("/api/runs/{name}/next")
    async def next_char(name: str, req: NextRequest) -> dict:
        """The next character's most likely candidates after `text`, at each temperature: softmax(logits / T)."""
        return await work(do_next, run_named(name), req)

    @app.post("/api/runs/{name}/activations")
    async def activations(name: str, req: ActivationsRequest) -> dict:
        return await work(do_activations, run_named(name), req)

    @app.post(
        "/api/runs/{name}/sample/stream",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": 'one `data: {"text": piece}` event per generated piece, then '
                "`event: end` with the number of characters",
            }
        },
    )
    async def sample_stream(name: str, req: SampleRequest, request: Request):
        run = run_named(name)
        if req.num != 1:
            raise CharnnError("a stream carries one sample; ask /sample for num > 1")
        loaded, model = await pool.run(run.current, req.checkpoint)
        mix = await pool.run(run.mixture, req.checkpoint) if req.mix and not loaded.meta.get("lead_in") else None
        pieces = _stream_pieces(loaded, model, req, mix)  # checks the prime
        pool.admit()  # the 503 comes now; the slot is handed back by the stream, which holds it
        pool.release()
        return StreamingResponse(
            _events(pool, pieces, request, app),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return app


def _stream_pieces(loaded, model, req: SampleRequest, mix=None):
    """The pieces /sample/stream sends: one sample, or for a run of documents one document; mix:
    the run's mixture to draw from (``Served.mixture``), or None."""
    opts: dict[str, Any] = dict(
        prime=req.prime,
        length=req.length,
        seed=req.seed,
        temperature=req.temperature,
        top_k=req.top_k,
        top_p=req.top_p,
        clamped=parse_clamp(req.clamp, loaded.config.model),
    )
    if loaded.meta.get("lead_in"):  # ended at its end symbol
        return stream_document(model, loaded.vocab, loaded.meta, req.label, **opts)
    refuse_label_unless_labelled(loaded.meta, req.label)
    return stream(model, loaded.vocab, stop=req.stop, mix=mix, **opts)


def _take(pieces, n: int) -> tuple[list[str], bool]:
    """Up to n pieces of the sample, and whether it ended: one trip to the pool for several
    characters (a trip and a write per character cost more than the model step at batch 1)."""
    out: list[str] = []
    for _ in range(n):
        piece = next(pieces, None)
        if piece is None:
            return out, True
        out.append(piece)
    return out, False


async def _events(pool: Workers, pieces, request: Request, app: FastAPI):
    """The stream's events, one per piece, generated in the pool a few at a time (the first
    alone, so that it comes at once). Ends early when the client goes away (Starlette cancels
    this generator; the check below also covers servers that do not)."""
    pool.active += 1  # held while streaming; taken here, not by the endpoint, so that a response
    app.state.streaming += 1  # that never starts cannot leak a slot
    sent, batch, ended = 0, 1, False
    try:
        while not ended:
            try:
                got, ended = await pool.run(_take, pieces, batch)
            except CharnnError as e:  # the status line has gone out: say it in the stream, then end it
                yield f"event: error\ndata: {json.dumps({'detail': str(e)})}\n\n"
                return
            batch = 16
            text = "".join(f"data: {json.dumps({'text': p}, ensure_ascii=False)}\n\n" for p in got if p)
            sent += sum(len(p) for p in got)
            if text:
                yield text
            if await request.is_disconnected():
                return
        yield f"event: end\ndata: {json.dumps({'chars': sent})}\n\n"
    finally:
        pool.active -= 1
        app.state.streaming -= 1
        try:
            pieces.close()
        except ValueError:  # still running in a pool thread after a cancel: it is simply dropped
            pass
