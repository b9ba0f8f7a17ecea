"""Encode text once into a cached memory-mapped array, cut it into splits, and serve batches.

Encoding streams the corpus in chunks, so a corpus larger than memory can be used: one pass
counts the units (the vocabulary), a second maps them to ids written straight to disk. The
result is cached under a key made from the content and the settings, and reused.

Training batches are B parallel streams of the training split, each read in consecutive windows
of T characters, so that the hidden state can be carried from one window to the next
(truncated backpropagation through time).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from charnn import corpus as corpus_mod
from charnn import documents as docs_mod
from charnn.errors import CharnnError
from charnn.log import warn
from charnn.vocab import TokenVocab, Vocab, code_points

# Bytes read at a time while encoding. Small, so that most blocks of code or English prose are
# pure ASCII and skip UTF-8 decoding (64 KB: 89% of the Linux tree's blocks, 32% at 1 MB).
CHUNK = 1 << 16
HASH_BLOCK = 16 << 20
FORMAT_VERSION = 1
MAX_CODE = 0x110000


@dataclass
class Encoded:
    ids: np.ndarray  # (N,) memory-mapped, dtype vocab.dtype
    vocab: Vocab
    key: str
    # Token text: where val and test begin in ids, and the split fractions that put them there
    # (the text is cut on characters first, then each part is tokenised); documents: the same,
    # cut between documents.
    bounds: tuple[int, int] | None = None
    fractions: tuple[float, float, float] | None = None
    lead_in: str = ""  # documents: what sampling reads first (documents.lead_in)
    labels: tuple[str, ...] = ()  # labelled documents: the label names; each id is char + len(vocab) * label
    lead_label: str = ""  # the label of the lead-in's document
    label_counts: tuple[int, ...] = ()  # training documents per label

    def splits(self, fractions) -> dict[str, np.ndarray]:
        """Contiguous train / val / test views, in that order."""
        n = len(self.ids)
        n_train = int(n * fractions[0])
        n_val = int(n * fractions[1])
        if self.bounds is not None:
            if tuple(fractions) != tuple(self.fractions or ()):
                raise ValueError(f"this token text was cut at {self.fractions}, not {tuple(fractions)}")
            n_train, n_val = self.bounds[0], self.bounds[1] - self.bounds[0]
        return {
            "train": self.ids[:n_train],
            "val": self.ids[n_train : n_train + n_val],
            "test": self.ids[n_train + n_val :],
        }

    def remap(self, target: Vocab, what: str = "the text") -> "Encoded":
        """The same text with ids of another vocabulary, which must hold every unit of this one."""
        if self.vocab == target:
            return self
        if isinstance(target, TokenVocab) or isinstance(self.vocab, TokenVocab):
            raise CharnnError(
                f"{what} was tokenised with other tokens than the model's; a token model reads "
                f"text only through its own tokenizer: start a new run to learn new tokens"
            )
        missing = sorted(set(self.vocab.codes.tolist()) - set(target.codes.tolist()))
        if missing or self.vocab.unit != target.unit:
            raise CharnnError(
                f"{what} has {self.vocab.describe(missing)} that the model's vocabulary lacks; "
                f"use text whose characters the model knows, or train a new model"
            )
        lut = np.searchsorted(target.codes, self.vocab.codes).astype(target.dtype)  # our id -> model id
        # Materialised in memory: this is for fine-tuning and evaluation text, not a huge corpus.
        return Encoded(lut[self.ids], target, self.key)


class NotUTF8(CharnnError):
    """A text read as characters holds bytes that are not UTF-8; says where."""

    def __init__(self, path, offset: int):
        self.path, self.offset = path, offset
        super().__init__(
            f"{path} is not valid UTF-8 at byte offset {offset}; "
            f"pass --encoding-errors replace to replace bad bytes, or --unit bytes"
        )


def _chunks(files, unit: str, errors: str) -> Iterator[np.ndarray]:
    """Yield the corpus as arrays of code points (or bytes), chunk by chunk, file by file."""
    for path in files:
        offset = 0
        pending = b""
        with open(path, "rb") as f:
            while True:
                block = f.read(CHUNK)
                final = not block
                if unit == "bytes":
                    if final:
                        break
                    yield np.frombuffer(block, dtype=np.uint8)
                    continue
                data = pending + block
                if final:
                    cut = len(data)
                else:
                    # Cut before a UTF-8 sequence that may continue in the next block.
                    cut = len(data)
                    for back in range(1, min(4, len(data)) + 1):
                        b = data[len(data) - back]
                        if b & 0xC0 != 0x80:  # a lead byte or ASCII
                            if b >= 0xC0:
                                cut = len(data) - back
                            break
                piece = data[:cut]
                if piece.isascii():  # most code and much prose: the bytes are the code points
                    codes = np.frombuffer(piece, dtype=np.uint8)
                else:
                    try:
                        text = piece.decode("utf-8", errors)
                    except UnicodeDecodeError as e:
                        raise NotUTF8(path, offset + e.start) from None
                    codes = code_points(text)
                offset += cut
                pending = data[cut:]
                if len(codes):
                    yield codes
                if final:
                    break


def content_key(files, unit: str, errors: str) -> str:
    h = hashlib.sha256(f"charnn-data-v{FORMAT_VERSION}|{unit}|{errors}|".encode())
    for path in files:
        h.update(b"|file|")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(HASH_BLOCK), b""):
                h.update(block)
    return h.hexdigest()[:40]


def prepare(
    text: str = "stdlib",
    include: str = "*",
    unit: str = "char",
    encoding_errors: str = "strict",
    seed: int = 1337,
    cache: Path | None = None,
    split=(0.9, 0.05, 0.05),
    vocab_size: int = 0,
    tokens: TokenVocab | None = None,
    documents: str = "",
    label: tuple[str, str] = ("", ""),
) -> Encoded:
    """Resolve TEXT, encode it (or reuse the cached encoding) and return the memory-mapped ids.

    unit "bpe" learns `vocab_size` byte-pair tokens from the training split (cut by `split`), or
    uses `tokens` (a run's own tokenizer, when resuming or fine-tuning). `documents` (a
    --documents SPEC) frames the text's documents and cuts the splits between them; `label`
    (--label REGEX, --labels FILE) labels them."""
    if documents:
        return _prepare_documents(text, include, unit, encoding_errors, seed, cache, tuple(split), documents, label)
    if unit == "bpe":
        return _prepare_tokens(text, include, encoding_errors, seed, cache, tuple(split), vocab_size, tokens)
    corp = corpus_mod.resolve(text, include=include, seed=seed)
    root = (cache or corpus_mod.cache_dir()) / "data"
    key = content_key(corp.files, unit, encoding_errors)
    folder = root / key
    if (folder / "meta.json").is_file():
        try:
            return _load(folder, key)
        except (OSError, ValueError, KeyError):
            shutil.rmtree(folder, ignore_errors=True)  # a damaged cache entry: rebuild it
    return _encode(corp, unit, encoding_errors, root, key)


def _load(folder: Path, key: str) -> Encoded:
    meta = json.loads((folder / "meta.json").read_text())
    vocab = Vocab.from_json(meta["vocab"])
    n = int(meta["length"])
    dtype = np.dtype(meta.get("dtype", np.dtype(vocab.dtype).name))  # labelled documents: wider than the vocabulary
    ids = np.memmap(folder / "ids.bin", dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype)
    if "bounds" in meta:
        return Encoded(
            ids,
            vocab,
            key,
            tuple(meta["bounds"]),
            tuple(meta["split"]),
            meta.get("lead_in", ""),
            tuple(meta.get("labels", ())),
            meta.get("lead_label", ""),
            tuple(meta.get("label_counts", ())),
        )
    return Encoded(ids, vocab, key)


def _prepare_documents(text, include, unit, errors, seed, cache, split, spec, label=("", "")) -> Encoded:
    """The text's documents, shuffled by `seed`, each followed by documents.END, cut into splits
    between documents (see charnn.documents). Cached like the text; the text is held in memory
    while it is cut. label: (--label REGEX, --labels FILE), at most one given: each id is then
    char + V * label, the end symbol carrying the label of the document that follows it in its
    split (it predicts that document's first character)."""
    if unit != "char":
        raise CharnnError(f"--documents reads characters (--unit char); --unit {unit} with documents is not supported yet")
    chars = prepare(text, include, "char", errors, seed, cache)
    root = (cache or corpus_mod.cache_dir()) / "data"
    regex, labels_file = label
    which = f"re:{regex}" if regex else f"file:{_file_digest(labels_file)}" if labels_file else ""
    key = hashlib.sha256(f"docs|{chars.key}|{spec}|{seed}|{split}|{which}".encode()).hexdigest()[:40]
    reused = _reuse(root / key, chars.key)
    if reused is not None:
        return reused
    docs = docs_mod.split_documents(chars.vocab.decode(chars.ids), spec)
    labels = None
    if regex or labels_file:
        docs, labels = _labelled(docs, regex, labels_file)
    order = docs_mod.cut_indices(docs, split, seed)
    parts = {k: [docs[i] for i in v] for k, v in order.items()}
    texts = [docs_mod.framed(parts[name]) for name in ("train", "val", "test")]
    vocab = Vocab(sorted(set(code_points("".join(texts)).tolist())), "char")
    meta = {
        "vocab": vocab.to_json(),
        "files": chars.key,
        "unit": "char",
        "split": list(split),
        "documents": spec,
        "counts": [len(parts[n]) for n in ("train", "val", "test")],
        "lead_in": docs_mod.lead_in(parts["train"]),
        "encoding_errors": errors,
        "version": FORMAT_VERSION,
    }
    pieces = [vocab.encode(t) for t in texts]
    if labels is not None:
        names = sorted(set(labels))
        number = {n: k for k, n in enumerate(names)}
        end = int(vocab.encode(docs_mod.END)[0])
        pieces = [
            _with_labels(p, [number[labels[i]] for i in order[name]], len(vocab), end)
            for p, name in zip(pieces, ("train", "val", "test"))
        ]
        meta.update(
            labels=names,
            lead_label=labels[order["train"][-1]],
            label_counts=[sum(labels[i] == n for i in order["train"]) for n in names],
        )
    dtype = (
        np.uint8
        if max(int(p.max()) for p in pieces if len(p)) < 256
        else np.uint16
        if max(int(p.max()) for p in pieces if len(p)) < 65536
        else np.uint32
    )
    meta.update(
        length=sum(len(p) for p in pieces), bounds=[len(pieces[0]), len(pieces[0]) + len(pieces[1])], dtype=np.dtype(dtype).name
    )
    _write_entry(root, key, (p.astype(dtype).tobytes() for p in pieces), meta)
    return _load(root / key, chars.key)


def _file_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError as e:
        raise CharnnError(f"--labels {path}: cannot read it ({e.__class__.__name__})") from None


def _labelled(docs: list[str], regex: str, labels_file: str) -> tuple[list[str], list[str]]:
    """The documents that have a label, and their labels; the others are left out, and said so."""
    labels = docs_mod.doc_labels(docs, regex) if regex else docs_mod.read_labels(labels_file, len(docs))
    missing = [d for d, lab in zip(docs, labels) if lab is None]
    if missing:
        shown = "; ".join(repr(d[:30]) for d in missing[:3])
        warn(
            f"{len(missing):,} of {len(docs):,} documents have no label and are left out of the run ({shown}"
            f"{' ...' if len(missing) > 3 else ''})"
        )
    kept = [(docs_mod.unlabelled(d, regex) if regex else d, lab) for d, lab in zip(docs, labels) if lab is not None]
    names = sorted({lab for _, lab in kept})
    if len(names) < 2:
        raise CharnnError(
            f"every labelled document has the label {names[0]!r}; conditioning on a label needs at "
            f"least two (check --label / --labels)"
        )
    return [d for d, _ in kept], [lab for _, lab in kept]


def _with_labels(ids: np.ndarray, doc_labels: list[int], V: int, end: int) -> np.ndarray:
    """Framed ids of documents in order -> char + V * label: each document's characters carry its
    label, its end symbol the next document's (the last one's its own)."""
    out = ids.astype(np.int64)
    ends = np.flatnonzero(out == end)
    starts = np.concatenate([[0], ends[:-1] + 1])
    for k, (a, e) in enumerate(zip(starts, ends)):
        out[a:e] += V * doc_labels[k]
        out[e] += V * doc_labels[min(k + 1, len(doc_labels) - 1)]
    return out


def _reuse(folder: Path, key: str) -> Encoded | None:
    """A derived cache entry (tokens, documents) if it is there and whole; a damaged one is removed."""
    if (folder / "meta.json").is_file():
        try:
            return _load(folder, key)
        except (OSError, ValueError, KeyError, CharnnError):
            shutil.rmtree(folder, ignore_errors=True)
    return None


def _prepare_tokens(text, include, errors, seed, cache, split, vocab_size, tokens) -> Encoded:
    """The text as byte-pair tokens: cut into splits on characters, the tokenizer learned from the
    training part (its alphabet from all of it, as a char model's vocabulary is), each part
    tokenised on its own so a char model and a token model score exactly the same text. Cached
    like characters; the text is held in memory while it is tokenised (tokenizers takes strings)."""
    import tokenizers

    chars = prepare(text, include, "char", errors, seed, cache)
    root = (cache or corpus_mod.cache_dir()) / "data"
    which = hashlib.sha256(tokens.json.encode()).hexdigest()[:16] if tokens is not None else f"learn{vocab_size}"
    key = hashlib.sha256(f"bpe|{chars.key}|{which}|{split}|{tokenizers.__version__}".encode()).hexdigest()[:40]
    # The Encoded's key is the text's content key (what a resumed run checks); the folder's names
    # the tokens too.
    reused = _reuse(root / key, chars.key)
    if reused is not None:
        return reused
    parts = {name: chars.vocab.decode(ids) for name, ids in chars.splits(split).items()}
    if tokens is None:
        alphabet = sorted(set(chars.vocab.decode(np.arange(len(chars.vocab))).encode("utf-8")))
        tokens = TokenVocab.train(parts["train"], vocab_size, alphabet)
    pieces = [tokens.encode(parts[name]).astype(tokens.dtype) for name in ("train", "val", "test")]
    bounds = [len(pieces[0]), len(pieces[0]) + len(pieces[1])]
    meta = {
        "length": sum(len(p) for p in pieces),
        "vocab": tokens.to_json(),
        "files": chars.key,
        "unit": "bpe",
        "bounds": bounds,
        "split": list(split),
        "chars": [len(parts[n]) for n in ("train", "val", "test")],
        "encoding_errors": errors,
        "version": FORMAT_VERSION,
    }
    _write_entry(root, key, (p.tobytes() for p in pieces), meta)
    return _load(root / key, chars.key)


def _write_entry(root: Path, key: str, blocks, meta: dict) -> None:
    """Write ids.bin from byte blocks and meta.json into a temporary folder renamed into place when
    complete, so a crash never leaves a half-written cache entry."""
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        # Plain writes, not a writable memmap: its dirty pages would count as resident memory
        # and grow with the corpus.
        with open(tmp / "ids.bin", "wb") as out:
            for block in blocks:
                out.write(block)
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            os.replace(tmp, root / key)
        except OSError:  # another process finished the same entry first; use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


STALE_AFTER = 24 * 3600  # seconds: no encode takes a day (a gigabyte takes about 20 s)


def _remove_stale_temporaries(root: Path) -> None:
    """Remove the temporary folders of encodes that were killed (SIGKILL skips their cleanup).
    Only folders untouched for a day: a younger one may belong to an encode still running."""
    now = time.time()
    for p in root.glob(".*"):
        try:
            if p.is_dir() and now - p.stat().st_mtime > STALE_AFTER:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _encode(corp, unit: str, errors: str, root: Path, key: str) -> Encoded:
    # Pass 1: the vocabulary is the sorted set of units seen (marking them is much faster than
    # np.bincount, which walks a table of every Unicode code point per block).
    seen = np.zeros(256 if unit == "bytes" else MAX_CODE, dtype=bool)
    n = 0
    for codes in _chunks(corp.files, unit, errors):
        seen[codes] = True
        n += len(codes)
    if n < 2:
        raise CharnnError(f"{corp.name} holds {n} characters; a language model needs at least 2 (ideally thousands)")
    vocab = Vocab(np.nonzero(seen)[0].tolist(), unit)
    lut = np.zeros(len(seen), dtype=vocab.dtype)
    lut[vocab.codes] = np.arange(len(vocab), dtype=vocab.dtype)

    # Pass 2: map to ids, written straight to the cache entry.
    meta = {
        "length": n,
        "vocab": vocab.to_json(),
        "files": [str(f) for f in corp.files],
        "unit": unit,
        "encoding_errors": errors,
        "version": FORMAT_VERSION,
    }
    _write_entry(root, key, (lut[codes].tobytes() for codes in _chunks(corp.files, unit, errors)), meta)
    return _load(root / key, key)


class StreamBatcher:
    """B parallel streams over a split, read in consecutive windows of T characters.

    Stream b covers inputs data[b*L : (b+1)*L] and targets shifted by one, where
    L = (N - 1) // B; an epoch is L // T windows. Too little data for B streams of at least T
    characters shrinks the batch (and, if need be, the window) with a warning.
    """

    def __init__(self, data: np.ndarray, batch_size: int, seq_len: int, what: str = "training split"):
        n = len(data)
        if n < 2:
            raise CharnnError(f"the {what} holds {n} characters; use more text or change --split")
        if (n - 1) // seq_len < 1:
            warn(f"the {what} has only {n} characters: --seq-len lowered from {seq_len} to {n - 1}")
            seq_len = n - 1
        max_batch = (n - 1) // seq_len
        if batch_size > max_batch:
            warn(
                f"the {what} has {n} characters, too few for {batch_size} streams of {seq_len}: "
                f"--batch-size lowered to {max_batch}"
            )
            batch_size = max_batch
        self.data = data
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.stream_len = (n - 1) // batch_size
        self.steps_per_epoch = self.stream_len // seq_len
        self._starts = np.arange(batch_size, dtype=np.int64)[:, None] * self.stream_len  # (B, 1)
        self._window = np.arange(seq_len + 1, dtype=np.int64)[None, :]  # (1, T+1)

    def window(self, step_in_epoch: int, first: int = 0, count: int | None = None, epoch: int = 0) -> torch.Tensor:
        """Streams first..first+count-1 of one window as one contiguous (count, T+1) int64 tensor:
        inputs are [:, :-1], targets [:, 1:]. Under torchrun each process reads only its own
        streams, and one contiguous block is one host-to-device copy."""
        count = self.batch_size - first if count is None else count
        idx = self._starts[first : first + count] + step_in_epoch * self.seq_len + self._window  # (count, T+1)
        return torch.from_numpy(np.asarray(self.data[idx], dtype=np.int64))

    def batch(self, step_in_epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets for one window, each (B, T) int64."""
        chunk = self.window(step_in_epoch)
        return chunk[:, :-1], chunk[:, 1:]


class RandomWindows(StreamBatcher):
    """B windows of T characters at random places in the split, fresh at every step (nanoGPT's
    batches), for a model that carries no state from one window to the next (a transformer).

    The places are a function of (seed, epoch, step): no state to save, and a resumed run draws
    exactly the windows an uninterrupted one would. An epoch is as many steps as the streams
    would take to read the split once."""

    def __init__(self, data: np.ndarray, batch_size: int, seq_len: int, seed: int, what: str = "training split"):
        super().__init__(data, batch_size, seq_len, what)
        self.seed = seed

    def window(self, step_in_epoch: int, first: int = 0, count: int | None = None, epoch: int = 0) -> torch.Tensor:
        count = self.batch_size - first if count is None else count
        rng = np.random.default_rng([self.seed, epoch, step_in_epoch])
        starts = rng.integers(0, len(self.data) - self.seq_len, size=self.batch_size)  # every process draws all
        idx = starts[first : first + count, None] + self._window  # (count, T+1)
        return torch.from_numpy(np.asarray(self.data[idx], dtype=np.int64))


def eval_windows(data: np.ndarray, streams: int, seq_len: int, warmup: int = 100, positions: bool = False):
    """Windows that score every target position 1..N-1 of data exactly once.

    The split is cut into `streams` pieces read in parallel. Each piece starts reading `warmup`
    characters early (those predictions are not scored), so that the characters at the start of
    a piece are predicted with context, as they would be in one long pass.
    Yields (x, y) of shape (S, T) int64, with y = -1 where nothing is scored; with positions,
    (x, y, pos) where pos (S, T) is each input's index in data.
    """
    n = len(data)
    if n < 2:
        return
    streams = max(1, min(streams, (n - 1) // max(1, seq_len)))
    piece = -(-(n - 1) // streams)  # ceil: scored targets per stream
    first = np.arange(streams, dtype=np.int64) * piece  # first scored input position
    begin = np.maximum(first - warmup, 0)
    end = np.minimum(first + piece, n - 1)  # one past the last scored input position
    total = int((end - begin).max())
    for col in range(0, total, seq_len):
        pos = begin[:, None] + col + np.arange(seq_len, dtype=np.int64)[None, :]  # (S, T)
        scored = (pos >= first[:, None]) & (pos < end[:, None])
        safe = np.minimum(pos, n - 2)
        x = torch.from_numpy(np.asarray(data[safe], dtype=np.int64))
        y = torch.from_numpy(np.asarray(data[safe + 1], dtype=np.int64))
        y[torch.from_numpy(~scored)] = -1
        yield (x, y, pos) if positions else (x, y)
