"""charnn serve under load (a row of `make bench`; also `python bench/serve.py`).

50 concurrent clients each make 20 streamed requests for a 200-character sample of a 1x384 LSTM,
over loopback, against `charnn serve` in its own process with its default settings. Reported:
requests per second, p50 / p99 latency (request sent to the end event), p50 / p99 time to the
first character, and errors (any status but 200, or a stream that ends without its end event).
The reference is the same 1,000 samples made one after another in one process, without the
server (what a script calling the library would get).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def make_run(folder: Path) -> Path:
    """A run directory holding a 1x384 LSTM over 96 symbols (random weights: speed is what is measured)."""
    from charnn import checkpoint as ckpt
    from charnn.config import RunConfig
    from charnn.model import CharRNN
    from charnn.vocab import Vocab

    cfg = RunConfig()
    cfg.model.layers, cfg.model.hidden, cfg.model.embed = 1, 384, 64
    vocab = Vocab([10] + list(range(32, 127)))
    cfg.model.vocab_size = len(vocab)
    cfg.run_id = "bench"
    torch.manual_seed(0)
    model = CharRNN(cfg.model)
    run = folder / "bench"
    run.mkdir()
    ckpt.save(run / ckpt.BEST, cfg, vocab, model, {"step": 0})
    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _client(http, url: str, n: int, body: dict, out: list) -> None:
    for k in range(n):
        t0 = time.perf_counter()
        first, ended, status = None, False, 0
        try:
            async with http.stream("POST", url, json=dict(body, seed=k)) as r:
                status = r.status_code
                async for line in r.aiter_lines():
                    if first is None and line.startswith("data: "):
                        first = time.perf_counter() - t0
                    elif line.startswith("event: end"):
                        ended = True
        except Exception as e:  # noqa: BLE001  a transport error is an error of the row, not of the bench
            status = repr(e)
        out.append({"latency": time.perf_counter() - t0, "first": first, "ok": status == 200 and ended,
                    "status": status})


async def _load(url: str, clients: int, per_client: int, length: int) -> tuple[list, float]:
    import httpx

    results: list = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(_client(http, url, per_client, {"length": length, "temperature": 1.0}, results)
                               for _ in range(clients)))
        return results, time.perf_counter() - t0


def _pct(xs, q) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def measure(clients: int = 50, per_client: int = 20, length: int = 200) -> dict:
    from charnn import checkpoint as ckpt
    from charnn.sample import sample_text

    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp))
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "charnn", "serve", str(run), "--port", str(port)],
                                  stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        try:
            line = server.stderr.readline()
            if "http://" not in line:
                raise RuntimeError(f"charnn serve did not start: {line}{server.stderr.read()}")
            import httpx

            for _ in range(100):  # the banner comes just before uvicorn binds
                try:
                    httpx.get(f"http://127.0.0.1:{port}/api/runs", timeout=5)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            url = f"http://127.0.0.1:{port}/api/runs/bench/sample/stream"
            results, wall = asyncio.run(_load(url, clients, per_client, length))
        finally:
            server.terminate()
            server.wait(30)
        # the reference: the same samples, one after another, in this process
        loaded = ckpt.load(run)
        model = loaded.build_model()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as each of the server's workers runs
        try:
            t0 = time.perf_counter()
            for k in range(clients * per_client):
                sample_text(model, loaded.vocab, length=length, seed=k, temperature=1.0)
            ref_wall = time.perf_counter() - t0
        finally:
            torch.set_num_threads(threads)
    ok = [r for r in results if r["ok"]]
    return {"requests": len(results), "errors": len(results) - len(ok), "wall": wall,
            "rps": len(ok) / wall, "ref_rps": clients * per_client / ref_wall,
            "p50": _pct([r["latency"] for r in ok], 0.5), "p99": _pct([r["latency"] for r in ok], 0.99),
            "first_p50": _pct([r["first"] for r in ok if r["first"] is not None], 0.5),
            "first_p99": _pct([r["first"] for r in ok if r["first"] is not None], 0.99),
            "statuses": sorted({str(r["status"]) for r in results}), "cores": os.cpu_count()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=20, help="per client")
    ap.add_argument("--length", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    m = measure(a.clients, a.requests, a.length)
    if a.json:
        print(json.dumps(m))
        return 0
    print(f"{m['requests']} requests ({a.clients} clients x {a.requests}, {a.length} characters each), "
          f"{m['cores']} cores")
    print("| measure | value |\n|---|---|")
    for k, v in [("requests/s through the server", f"{m['rps']:.1f}"),
                 ("samples/s in one process, no server (reference)", f"{m['ref_rps']:.1f}"),
                 ("latency p50 / p99", f"{m['p50']:.2f} s / {m['p99']:.2f} s"),
                 ("first character p50 / p99", f"{m['first_p50']:.3f} s / {m['first_p99']:.3f} s"),
                 ("errors", f"{m['errors']} ({', '.join(m['statuses'])})")]:
        print(f"| {k} | {v} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
