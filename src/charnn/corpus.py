"""Where text comes from: a file, a folder of files, or a built-in corpus.

A corpus is an ordered list of files whose bytes, concatenated, are the text. Nothing is read
here beyond file names and sizes; ``data.py`` streams the bytes when it encodes them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import random
import sysconfig
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from charnn.errors import CharnnError
from charnn.files import write_atomic

# tiny Shakespeare, the char-rnn / nanoGPT default corpus, pinned by content.
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

BUILTIN = {
    "stdlib": "the top-level modules of this Python's standard library (always available offline)",
    "shakespeare": "tiny Shakespeare (1.1 MB), downloaded once into the cache",
}


@dataclass(frozen=True)
class Corpus:
    name: str  # what the user asked for, for messages
    files: tuple[Path, ...]

    @property
    def size(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def cache_dir() -> Path:
    """Where downloads and encoded data live: $CHARNN_CACHE, else ~/.cache/charnn."""
    root = os.environ.get("CHARNN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "charnn"
    )
    return Path(root)


def resolve(text: str, include: str = "*", seed: int = 1337) -> Corpus:
    """Turn the TEXT argument into a Corpus: an existing path wins over a built-in name."""
    path = Path(text).expanduser()
    if path.is_file():
        return Corpus(text, (path,))
    if path.is_dir():
        return Corpus(text, _folder_files(path, include, seed))
    if text == "stdlib":
        return Corpus(text, _stdlib_files())
    if text == "shakespeare":
        return Corpus(text, (download(SHAKESPEARE_URL, SHAKESPEARE_SHA256, "tinyshakespeare.txt"),))
    if path.exists():
        raise CharnnError(f"{text} is neither a regular file nor a folder")
    names = ", ".join(BUILTIN)
    raise CharnnError(f"no such file or folder: {text} (built-in corpora: {names})")


def _folder_files(folder: Path, include: str, seed: int) -> tuple[Path, ...]:
    # Sorted first so that the seed alone decides the order, whatever the file system lists.
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and fnmatch.fnmatch(p.name, include)
    )
    files = [f for f in files if f.stat().st_size > 0]
    if not files:
        raise CharnnError(f"the folder {folder} has no non-empty files matching --include {include!r}")
    # The paper built its Linux corpus by shuffling the files and concatenating them.
    random.Random(seed).shuffle(files)
    return tuple(files)


def _stdlib_files() -> tuple[Path, ...]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    if not files:
        raise CharnnError(f"found no Python standard library sources under {root}; pass a text file instead")
    return tuple(files)


def download(url: str, sha256: str, filename: str, timeout: float = 30.0) -> Path:
    """Fetch url into the cache once, verified against sha256; later calls read the cache."""
    target = cache_dir() / "corpora" / filename
    if target.is_file() and _sha256(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data = resp.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise CharnnError(
            f"could not download {filename} from {url} ({reason}); check the network, or pass a local text file instead"
        ) from None
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise CharnnError(
            f"the download of {filename} from {url} has sha256 {got[:16]}..., expected {sha256[:16]}...; not using it"
        )
    write_atomic(target, data)
    return target


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
