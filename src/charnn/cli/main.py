"""The command line's entry point: build the parser from each group's module, run one command,
and turn every error a user can cause into one line and exit code 2."""

from __future__ import annotations

import sys

from charnn import __version__
from charnn.cli import args as args_mod
from charnn.cli import inspect as inspect_cli
from charnn.cli import serve as serve_cli
from charnn.cli import study as study_cli
from charnn.cli import teach as teach_cli
from charnn.cli import train as train_cli
from charnn.errors import CharnnError


def build_parser() -> args_mod.Parser:
    p = args_mod.Parser(prog="charnn", description="Train, sample, evaluate and look inside character-level RNN language models.")
    p.add_argument("--version", action="version", version=f"charnn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=args_mod.Parser)
    train_cli.add_parsers(sub)
    study_cli.add_parsers(sub)
    inspect_cli.add_parsers(sub)
    serve_cli.add_parsers(sub)
    teach_cli.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return args_mod.EXIT_USAGE
    try:
        return args.func(args)
    except CharnnError as e:
        print(f"charnn {args.command}: error: {e}", file=sys.stderr)
        return args_mod.EXIT_USAGE
    except KeyboardInterrupt:
        print(f"charnn {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `charnn sample run | head`
        sys.stderr.close()
        return 0
    except OSError as e:  # a disk or permission problem the command did not foresee: still one line
        name = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"charnn {args.command}: error:{name} {e.strerror or e}", file=sys.stderr)
        return args_mod.EXIT_USAGE
    except MemoryError:
        print(f"charnn {args.command}: error: out of memory; use a smaller --batch-size, --hidden or --seq-len", file=sys.stderr)
        return 1
