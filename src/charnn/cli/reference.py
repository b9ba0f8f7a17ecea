"""The command reference (docs/reference.md), generated from the command line's own parsers:
`make docs` writes it (python -m charnn.cli.reference > docs/reference.md), and a test fails
when the committed file differs from what `--help` says. Hand-written here because argparse
renders help for a terminal, not Markdown; it reads argparse's documented attributes only
where the public API has none (the sub-command tables)."""

from __future__ import annotations

import argparse
import os

from charnn.api import SETTINGS
from charnn.cli.main import build_parser
from charnn.config import RunConfig

WIDTH = "100"  # usage lines are wrapped at this width, whatever the terminal


def _subcommands(parser: argparse.ArgumentParser, prefix: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub, helps.get(name) or ""
                yield from _subcommands(sub, f"{prefix} {name}")


def _cell(text: str) -> str:
    """One table cell: one line, with Markdown's own characters escaped (help texts hold regexes)."""
    out = " ".join(str(text).split())
    for ch in "\\|[]*_<>`":
        out = out.replace(ch, "\\" + ch)
    return out


def _row(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    fmt = parser._get_formatter()
    if action.option_strings:
        name = ", ".join(action.option_strings)
        if action.nargs != 0:
            name += " " + fmt._format_args(action, action.dest.upper())
    else:
        name = fmt._metavar_formatter(action, action.dest)(1)[0]
    default = action.default
    if default is None and parser.prog == "charnn train" and action.dest in SETTINGS:
        # train's flags default to None ("not given"); the value a run gets is the default preset's
        default = getattr(getattr(RunConfig(), SETTINGS[action.dest]), action.dest)
        default = ",".join(f"{x:g}" for x in default) if isinstance(default, tuple) else default
    hidden = default is None or default is False or default == "" or default is argparse.SUPPRESS
    shown = "" if hidden or action.nargs == 0 else str(default)
    helptext = fmt._expand_help(action) if action.help else ""
    return f"| {_cell(name)} | {_cell(shown)} | {_cell(helptext)} |"


def _section(name: str, parser: argparse.ArgumentParser, summary: str) -> list[str]:
    out = [f"## `{name}`", ""]
    if summary or parser.description:
        out += [_cell(parser.description or summary), ""]
    out += ["```text", parser.format_usage().strip(), "```", ""]
    rows = [
        _row(parser, a)
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and a.help != argparse.SUPPRESS
    ]
    if rows:
        out += ["| argument | default | what it does |", "|---|---|---|", *rows, ""]
    return out


def markdown() -> str:
    """docs/reference.md: every command and sub-command, its usage and every argument."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = build_parser()
        lines = [
            "# Command reference",
            "",
            "Every command's arguments, generated from the command line itself by `make docs` "
            "(`charnn COMMAND --help` prints the same). What each command is for, with examples and "
            "measurements: [the commands](commands.md).",
            "",
        ]
        for name, sub, summary in _subcommands(parser, "charnn"):
            lines += _section(name, sub, summary)
        return "\n".join(lines).rstrip() + "\n"
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


if __name__ == "__main__":
    print(markdown(), end="")
