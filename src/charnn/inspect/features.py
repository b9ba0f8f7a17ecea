"""Features of a text, one value per character, that a cell might track.

Every feature describes the state *after reading* that character, which is what the cell value
recorded at the same position can know: the opening quote is inside the quotes, the closing
one is not. Binary features are 0/1; depths and positions are counts.

Built in: quotes, bracket nesting, position in the line (the paper's line-length counter),
comments (C and Python), string literals, indentation and wiki links ``[[...]]``. Users add
``NAME=REGEX``: the characters inside each match are on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from charnn.errors import CharnnError
from charnn.vocab import code_points


@dataclass
class Feature:
    name: str
    values: np.ndarray  # (N,) float32
    binary: bool
    about: str


def _quotes(codes: np.ndarray) -> np.ndarray:
    """Inside a pair of double quotes (the opening one included, the closing one excluded).

    A blank line closes any open quote: prose opens a quote again in each paragraph of a long
    speech without closing it, and one unmatched quote must not invert the rest of a book.
    """
    hits = (codes == ord('"')).astype(np.int64)
    idx = np.arange(len(codes))
    blank = np.zeros(len(codes), dtype=bool)
    blank[1:] = (codes[1:] == 10) & (codes[:-1] == 10)
    total = np.cumsum(hits)
    # count quotes since the last blank line: subtract the running total at that line
    base = np.maximum.accumulate(np.where(blank, idx, -1))
    before = np.where(base >= 0, total[np.maximum(base, 0)], 0)
    return ((total - before) % 2).astype(np.float32)


def _depth(codes: np.ndarray, open_ch: str, close_ch: str) -> np.ndarray:
    """Nesting depth of a bracket pair; a stray closing bracket at depth 0 is ignored.

    A vectorised fast path (a million characters in milliseconds) of brackets.scan's depth,
    which the tests hold it to."""
    step = (codes == ord(open_ch)).astype(np.int64) - (codes == ord(close_ch)).astype(np.int64)
    depth = np.cumsum(step)
    # Clamp at zero the way a reader would (stray closers do not make the depth negative):
    # depth_clamped = depth - min(0, running minimum of depth).
    return (depth - np.minimum(np.minimum.accumulate(depth), 0)).astype(np.float32)


def _line_position(codes: np.ndarray) -> np.ndarray:
    idx = np.arange(len(codes))
    last_nl = np.maximum.accumulate(np.where(codes == 10, idx, -1))
    return (idx - last_nl).astype(np.float32) * (codes != 10)


def _indent(text: str) -> np.ndarray:
    """Leading whitespace width of the current line (tabs to the next multiple of 8)."""
    out = np.zeros(len(text), dtype=np.float32)
    width, leading = 0, True
    for k, ch in enumerate(text):
        if ch == "\n":
            width, leading = 0, True
        elif leading and ch == " ":
            width += 1
        elif leading and ch == "\t":
            width = (width // 8 + 1) * 8
        else:
            leading = False
        out[k] = width
    return out


def _code_states(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass of a small lexer: (C comment, Python comment, string literal) per character.

    C comments are /* ... */ and // to the end of the line; a Python comment is # to the end of
    the line; strings are '...' or "..." with backslash escapes and end at a newline. Written by
    hand because no library lexes 'C or Python' without knowing which one the text is.
    """
    n = len(text)
    c_com = np.zeros(n, dtype=np.float32)
    py_com = np.zeros(n, dtype=np.float32)
    string = np.zeros(n, dtype=np.float32)
    state, quote, k = "code", "", 0
    while k < n:
        ch = text[k]
        nxt = text[k + 1] if k + 1 < n else ""
        if state == "code":
            if ch == "/" and nxt == "*":
                c_com[k : k + 2] = 1
                state, k = "block", k + 2
                continue
            if ch == "/" and nxt == "/":
                state = "line"
                c_com[k] = 1
            elif ch == "#":
                state = "py"
                py_com[k] = 1
            elif ch in "'\"":
                state, quote = "string", ch
                string[k] = 1
        elif state == "block":
            c_com[k] = 1
            if ch == "*" and nxt == "/":
                state, k = "code", k + 2  # the closing '/' is outside again
                continue
        elif state in ("line", "py"):
            if ch == "\n":
                state = "code"
            else:
                (c_com if state == "line" else py_com)[k] = 1
        elif state == "string":
            if ch == "\\" and nxt not in ("", "\n"):
                string[k : k + 2] = 1
                k += 2
                continue
            if ch == quote or ch == "\n":
                state = "code"
            else:
                string[k] = 1
        k += 1
    return c_com, py_com, string


def _regex(text: str, pattern: re.Pattern) -> np.ndarray:
    out = np.zeros(len(text), dtype=np.float32)
    for m in pattern.finditer(text):
        out[m.start() : m.end()] = 1
    return out


def parse_feature(spec: str) -> tuple[str, re.Pattern]:
    """'NAME=REGEX' -> (name, compiled pattern), or a CharnnError saying what is wrong."""
    name, sep, pattern = spec.partition("=")
    name = name.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_][\w-]*", name) or not pattern:
        raise CharnnError(f"--feature {spec!r} is not NAME=REGEX (e.g. --feature 'digits=[0-9]+')")
    try:
        rx = re.compile(pattern, re.MULTILINE)
    except re.error as e:
        raise CharnnError(f"--feature {name}: the regular expression {pattern!r} is invalid ({e})") from None
    if rx.match(""):
        raise CharnnError(
            f"--feature {name}: the regular expression {pattern!r} matches the empty string; make it match at least one character"
        )
    return name, rx


def compute(text: str, user: list[str] | tuple[str, ...] = (), context: str = "") -> list[Feature]:
    """All built-in features of `text`, then the user's NAME=REGEX ones.

    context: the text just before `text` (e.g. the training text before a validation split), read
    first so that quotes and brackets opened there count as open; only `text` is returned.
    """
    parsed = [parse_feature(s) for s in user]
    if context:
        return [Feature(f.name, f.values[len(context) :], f.binary, f.about) for f in compute(context + text, user)]
    codes = code_points(text).astype(np.int64)
    paren, bracket, brace = _depth(codes, "(", ")"), _depth(codes, "[", "]"), _depth(codes, "{", "}")
    c_com, py_com, string = _code_states(text)
    feats = [
        Feature("quotes", _quotes(codes), True, 'inside double quotes "..."'),
        Feature("parens", (paren > 0).astype(np.float32), True, "inside parentheses (...)"),
        Feature("brackets", (bracket > 0).astype(np.float32), True, "inside brackets [...]"),
        Feature("braces", (brace > 0).astype(np.float32), True, "inside braces {...}"),
        Feature("paren_depth", paren, False, "nesting depth of parentheses"),
        Feature("brace_depth", brace, False, "nesting depth of braces"),
        Feature("nesting_depth", paren + bracket + brace, False, "nesting depth of all brackets"),
        Feature("line_position", _line_position(codes), False, "characters since the last newline"),
        Feature("indent", _indent(text), False, "indentation of the current line"),
        Feature("c_comment", c_com, True, "inside a C comment /* */ or //"),
        Feature("py_comment", py_com, True, "inside a Python comment #"),
        Feature("string", string, True, "inside a string literal '...' or \"...\""),
        Feature("wikilink", _regex(text, re.compile(r"\[\[.*?\]\]", re.S)), True, "inside [[...]]"),
    ]
    names = {f.name for f in feats}
    for name, rx in parsed:
        if name in names:
            raise CharnnError(f"--feature {name}: that name is taken (built in or given twice); choose another")
        names.add(name)
        feats.append(Feature(name, _regex(text, rx), True, f"inside a match of /{rx.pattern}/"))
    return feats


# ---- long-range labels (which part of the text one is in), for the probes of analyze emergence ----


def read_feature_file(path, n: int) -> np.ndarray:
    """--feature-file: lines `START LABEL` (START a character offset in the analysed text, ascending;
    each label holds until the next START) -> an integer label per character (N,)."""
    starts, labels = [], []
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        raise CharnnError(f"cannot read --feature-file {path}: {e.strerror or e}") from None
    for k, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise CharnnError(
                f"--feature-file {path} line {k}: expected `START LABEL` (a character offset, then a label), got {line[:60]!r}"
            )
        starts.append(int(parts[0]))
        labels.append(parts[1].strip())
    if not starts or starts != sorted(starts) or starts[0] != 0:
        raise CharnnError(f"--feature-file {path}: the first range must start at 0 and the starts must ascend")
    names = sorted(set(labels))
    out = np.zeros(n, dtype=np.int64)
    for a, b, lab in zip(starts, starts[1:] + [n], labels):
        out[min(a, n) : min(b, n)] = names.index(lab)
    return out


def part_labels(text: str, regex: str) -> np.ndarray:
    """--parts: (N,) the number of matches of regex that start at or before each character, so
    each match begins a new part (part 0 is whatever precedes the first match)."""
    try:
        pattern = re.compile(regex)
    except re.error as e:
        raise CharnnError(f"--parts {regex!r} is not a valid regular expression: {e}") from None
    out = np.zeros(len(text), dtype=np.int64)
    for m in pattern.finditer(text):
        if m.end() > m.start():  # an empty match starts nothing
            out[m.start()] += 1
    return np.cumsum(out)
