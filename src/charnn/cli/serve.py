"""`charnn serve`: the command line of charnn.web.serve (parse, check, start uvicorn)."""

from __future__ import annotations

import os
import sys
from urllib.parse import quote

from charnn.cli import args as flags
from charnn.errors import CharnnError


def add_parsers(sub) -> None:
    s = sub.add_parser("serve", help="a web page and HTTP API to sample, score and look inside runs, live")
    s.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories; clients name each by its folder's name")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=flags.count, default=8000, help="port (default 8000; 0 picks a free one)")
    s.add_argument("--checkpoint", type=flags.which, default="best", metavar="WHICH", help=flags.WHICH_HELP)
    s.add_argument(
        "--workers",
        type=flags.count,
        default=0,
        help="requests computed at once (default: one per core, each on one torch thread)",
    )
    s.add_argument(
        "--token",
        default=None,
        help="a secret every request must carry (the page gets it from the address printed at the "
        "start; API calls send Authorization: Bearer TOKEN); required with a --host other than "
        "this machine's; default: $CHARNN_SERVE_TOKEN",
    )
    s.add_argument(
        "--queue",
        type=flags.count,
        default=256,
        help="requests that may wait for a worker; beyond that the answer is 503 (default 256)",
    )
    s.set_defaults(func=cmd_serve)

    e = sub.add_parser("export", help="a model for other runtimes: a page that samples in any browser, or ONNX")
    e.add_argument("run", metavar="RUN_DIR", help="a run directory or a .safetensors checkpoint")
    e.add_argument("--out", required=True, metavar="DIR", help="the folder to write (created; its parent must exist)")
    e.add_argument(
        "--format",
        choices=["web", "onnx"],
        default="web",
        help="web (default): DIR/index.html samples when opened from disk; onnx: DIR/model.onnx, one step",
    )
    e.add_argument("--checkpoint", type=flags.which, default="best", metavar="WHICH", help=flags.WHICH_HELP)
    e.set_defaults(func=cmd_export)


def cmd_serve(args) -> int:
    from charnn.devices import set_threads

    if args.port > 65535:
        raise CharnnError(f"--port must be 0 to 65535, got {args.port}")
    try:
        import uvicorn

        from charnn.web.serve import create_app, open_runs
    except ImportError as e:
        raise CharnnError(f"charnn serve needs FastAPI and uvicorn ({e.name} is missing): pip install fastapi uvicorn") from None
    cores = os.cpu_count() or 1
    workers = args.workers or cores
    set_threads(max(1, cores // workers))  # requests run side by side: one core's worth of threads each
    token = args.token if args.token is not None else os.environ.get(TOKEN_VARIABLE) or None
    check_token(args.host, token)
    from charnn.study import mixture

    runs = open_runs(args.runs, args.checkpoint, mixtures=mixture)  # --ngram-mix runs sample their mixture
    app = create_app(runs, workers=workers, queue=args.queue, token=token)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    address = f"http://{shown}:{args.port}/" + (f"?token={quote(token)}" if token else "")
    print(f"charnn serve: {', '.join(runs)} on {address} (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    except OSError as e:  # the port is taken, or the address is not this machine's
        raise CharnnError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}; choose another --port") from None
    return 0


TOKEN_VARIABLE = "CHARNN_SERVE_TOKEN"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MIN_TOKEN = 16


def check_token(host: str, token: str | None) -> None:
    """Only this machine may reach a server without a token; a token is long enough to guess at
    no better than by chance."""
    if token is not None and (len(token) < MIN_TOKEN or not token.isprintable() or " " in token):
        raise CharnnError(
            f"--token must be at least {MIN_TOKEN} printable characters without spaces, e.g. "
            f"python3 -c 'import secrets; print(secrets.token_urlsafe())'"
        )
    if host not in LOOPBACK and token is None:
        raise CharnnError(
            f"--host {host} lets other machines in: give a --token (or set {TOKEN_VARIABLE}) that every "
            f"request must carry, e.g. --token $(python3 -c 'import secrets; print(secrets.token_urlsafe())')"
        )


def cmd_export(args) -> int:
    from charnn.web.export import export_onnx, export_web

    written = (export_web if args.format == "web" else export_onnx)(args.run, args.out, args.checkpoint)
    for path in written:
        print(path)
    if args.format == "web":
        print(
            f"open {written[-1]} in a browser (no server needed); "
            f"{written[-1]}#prime=...&temperature=0&length=200 samples at once",
            file=sys.stderr,
        )
    return 0
