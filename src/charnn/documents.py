"""Collections of short texts: cut a text into documents, frame each with an end symbol, and cut
the splits between documents.

`--documents line` makes each non-empty line a document, `blank` each block separated by blank
lines, anything else is a regular expression (multi-line mode) whose every match starts a
document (text before the first match is not a document). Each document is followed by END,
U+0003 ("end of text"), a control character refused in the text itself: it is a symbol of the
vocabulary like any other, so the model learns to write it when a document is complete.

Training reads the framed documents one after another as one stream: the state crosses a
boundary the way it crosses any character, and END is what tells the model a new document
begins (char-rnn's way with its names, one a line). Sampling starts where training does at a
document's start: the model first reads the lead-in, the last document of the training split and
its END (kept in the checkpoint, so that a checkpoint alone still samples).

The documents are shuffled (by the run's seed) before the split fractions cut them by
characters, so a sorted file (names, A to Z) does not give the test split only the Z's.
"""

from __future__ import annotations

import re

import numpy as np

from charnn.errors import CharnnError

END = "\x03"
MAX_LEAD_IN = 2000  # characters of the lead-in kept in a checkpoint (a longer last document keeps its end)


def split_documents(text: str, spec: str) -> list[str]:
    """The documents of `text` as --documents SPEC cuts it (empty ones dropped)."""
    if END in text:
        raise CharnnError("the text contains U+0003, the symbol --documents uses to end each document; remove it from the text")
    if spec == "line":
        docs = text.split("\n")
    elif spec == "blank":
        docs = re.split(r"\n[ \t\r]*\n", text)
    else:
        try:
            rx = re.compile(spec, re.MULTILINE)
        except re.error as e:
            raise CharnnError(
                f"--documents {spec!r} is not a valid regular expression ({e}); use line, blank or "
                f"a regular expression that matches the start of each document"
            ) from None
        starts = [m.start() for m in rx.finditer(text)]
        if not starts:
            raise CharnnError(
                f"--documents {spec!r} matches nothing in the text, so there are no documents; "
                f"give a regular expression that matches the start of each document"
            )
        if len(starts) > len(text) // 2 + 1:  # e.g. 'x*', which matches the empty string everywhere
            raise CharnnError(
                f"--documents {spec!r} matches at {len(starts):,} of the text's {len(text):,} positions, so every "
                f"document would be a character or two; give a regular expression that matches only where a "
                f"document starts (e.g. '^[A-Z]+:')"
            )
        docs = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
    docs = [d.strip("\r\n") for d in docs]
    return [d for d in docs if d.strip()]


def framed(docs: list[str]) -> str:
    return "".join(d + END for d in docs)


def cut(docs: list[str], fractions, seed: int) -> dict[str, list[str]]:
    """The documents shuffled by `seed`, cut into train / val / test at the document boundaries
    nearest the fractions of the characters (each split at least one document when its fraction
    is above zero)."""
    return {k: [docs[i] for i in v] for k, v in cut_indices(docs, fractions, seed).items()}


def cut_indices(docs: list[str], fractions, seed: int) -> dict[str, list[int]]:
    """``cut``, as indices into docs."""
    if len(docs) < 3:
        raise CharnnError(
            f"--documents found {len(docs)} document{'s' * (len(docs) != 1)}; a model of documents "
            f"needs at least 3 (one for each split), ideally thousands"
        )
    order = np.random.default_rng(seed).permutation(len(docs)).tolist()
    ends = np.cumsum([len(docs[i]) + 1 for i in order])
    a = int(np.searchsorted(ends, ends[-1] * fractions[0]))
    b = int(np.searchsorted(ends, ends[-1] * (fractions[0] + fractions[1])))
    a = min(max(a, 1), len(docs) - 2)
    b = min(max(b, a + (fractions[1] > 0)), len(docs) - (fractions[2] > 0))
    return {"train": order[:a], "val": order[a:b], "test": order[b:]}


def doc_labels(docs: list[str], regex: str, training: bool = True) -> list[str | None]:
    """Each document's label: the first group of the regex's first match inside it (multi-line
    mode), or None where it does not match. (``unlabelled`` cuts that match out of the text.)
    training: a regex that labels no document is an error (the user's --label must be wrong);
    False when reading other text with a run's regex, whose caller says what is missing."""
    try:
        rx = re.compile(regex, re.MULTILINE)
    except re.error as e:
        raise CharnnError(f"--label {regex!r} is not a valid regular expression ({e})") from None
    if rx.groups < 1:
        raise CharnnError(f"--label {regex!r} has no group: put the label in parentheses, e.g. '^([A-Z]+):$'")
    found = [rx.search(d) for d in docs]
    labels = [m.group(1).strip() if m and m.group(1) and m.group(1).strip() else None for m in found]
    if training and not any(labels):
        raise CharnnError(
            f"--label {regex!r} matches no document (or only empty groups); give a regular expression "
            f"whose first group is each document's label"
        )
    return labels


def unlabelled(doc: str, regex: str) -> str:
    """The document without the first match of the label's regex: a text never names its own
    label to the model (the Federalist's author line, a play's speaker line)."""
    m = re.search(regex, doc, re.MULTILINE)
    return doc if m is None else (doc[: m.start()] + doc[m.end() :]).strip("\r\n")


def read_labels(path: str, count: int) -> list[str | None]:
    """--labels FILE: one label a line for each document in the text's order (an empty line: none)."""
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CharnnError(f"--labels {path}: cannot read it ({e.__class__.__name__})") from None
    if len(lines) != count:
        raise CharnnError(
            f"--labels {path} has {len(lines):,} lines but the text has {count:,} documents; give one "
            f"label a line, one line per document"
        )
    return [x.strip() or None for x in lines]


def labelled_ids(vocab, doc: str, label: int) -> np.ndarray:
    """One document as a labelled model reads it for scoring: END, the document, END, every id
    carrying `label` (char + V * label), so that every character and the end are predicted
    given the label."""
    return vocab.encode(END + doc + END) + len(vocab) * label


def lead_in(train_docs: list[str]) -> str:
    """What sampling reads before writing a document: the training split's last document and END."""
    return (train_docs[-1] + END)[-MAX_LEAD_IN:]


def complete(text: str) -> tuple[list[str], str]:
    """Generated text -> the complete documents in it (each ended by END), and the unfinished rest."""
    parts = text.split(END)
    return parts[:-1], parts[-1]


def novelty(docs: list[str], train_docs) -> float:
    """The share of generated documents not found verbatim among the training documents."""
    known = set(train_docs)
    return float(np.mean([d not in known for d in docs])) if docs else float("nan")


def check_lengths(ids: np.ndarray, vocab, cap: int, spec: str) -> None:
    """Refuse a framed text (ids of documents each followed by END; labelled ids are char + V *
    label) holding a document longer than `cap` characters: at that length a "document" is most
    likely a --documents SPLIT that does not cut the text where documents start, and sampling could
    never write one whole."""
    v = len(vocab)
    ends = np.flatnonzero(np.asarray(ids) % v == int(vocab.encode(END)[0]))
    if not len(ends):
        return
    lengths = np.diff(ends, prepend=-1) - 1
    k = int(lengths.argmax())
    if lengths[k] > cap:
        start = int(ends[k] - lengths[k])
        head = vocab.decode((np.asarray(ids[start : start + min(30, int(lengths[k]))]) % v).tolist())
        raise CharnnError(
            f"a document of {int(lengths[k]):,} characters (it starts {head!r}) is over --max-document {cap:,}: "
            f"check that --documents {spec!r} matches where each document starts, or raise --max-document"
        )
