"""The one way charnn puts a file in place, so that a crash at any instant leaves the old or the new.

``write_atomic`` writes a temporary file beside the target (``.NAME.tmp``), flushes it to the
disk (fsync), renames it over the target and fsyncs the folder, so the rename itself survives a
power cut. A process killed anywhere in between leaves the previous file complete and, at worst,
a temporary file that ``clean_temporaries`` removes at the next start. A write that fails (a full
disk, a read-only folder) removes its temporary file, keeps the previous file, and raises one
``CharnnError`` line.

For the fault-injection tests, ``CHARNN_FAULT=POINT:NAME:N`` makes the process kill itself with
SIGKILL the N-th time it writes a file called NAME, at POINT: ``mid-tmp`` (half the bytes of the
temporary file written), ``after-tmp`` (temporary file complete, not yet renamed) or
``after-rename`` (renamed, folder not yet fsynced). Nothing reads it otherwise.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
from pathlib import Path

from charnn.errors import CharnnError

TMP_PREFIX, TMP_SUFFIX = ".", ".tmp"
FAULT_POINTS = ("mid-tmp", "after-tmp", "after-rename")
_fault_counts: dict[str, int] = {}


def tmp_path(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{path.name}{TMP_SUFFIX}")


def _fault(point: str, name: str) -> None:
    spec = os.environ.get("CHARNN_FAULT")
    if not spec:
        return
    want_point, want_name, n = spec.split(":")
    if want_point == point and want_name == name:
        _fault_counts[point] = _fault_counts.get(point, 0) + 1
        if _fault_counts[point] == int(n):
            os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Put `data` (bytes, or text written as UTF-8) at `path` atomically and durably."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = tmp_path(path)
    replaced = False
    try:
        with open(tmp, "wb") as f:  # created with the usual permissions (0666 less the umask)
            if os.environ.get("CHARNN_FAULT"):
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                _fault("mid-tmp", path.name)
                f.write(data[len(data) // 2 :])
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _fault("after-tmp", path.name)
        os.replace(tmp, path)
        replaced = True
        _fault("after-rename", path.name)
        fsync_dir(path.parent)
    except OSError as e:
        kept = " (the previous one is kept)" if path.exists() and not replaced else ""
        raise CharnnError(
            f"cannot write {path}{kept}: {e.strerror or e}; free some space or choose "
            f"a writable folder, then run the command again"
        ) from None
    finally:
        if not replaced:
            try:
                tmp.unlink()
            except OSError:
                pass
    return path


def clean_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files a killed writer left in `folder`; return what was removed."""
    removed = []
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(TMP_PREFIX) and p.name.endswith(TMP_SUFFIX) and p.is_file():
                try:
                    p.unlink()
                    removed.append(p)
                except OSError:
                    pass
    return removed


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines log (none if it does not exist); a line that is not JSON is an
    error naming it (charnn writes whole lines atomically, so only a hand edit makes one)."""
    out: list[dict] = []
    if not path.exists():
        return out
    for k, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise CharnnError(f"{path} line {k + 1} is not JSON; was the file edited by hand?") from None
    return out


def is_number(x) -> bool:
    """Whether a value read from JSON is a number (an int or a float; true and false are not)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def strict_json(obj, **kw) -> str:
    """JSON that every parser reads: a NaN or an infinity (a measure that could not be taken, such
    as a speed never logged) becomes null. Python's json writes them as the bare words NaN and
    Infinity, which RFC 8259, JavaScript's JSON.parse and jq refuse."""

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(obj), allow_nan=False, **kw)


def cached_result(path: Path, run: str, numbers: tuple[str, ...]) -> dict | None:
    """A study's cached result for one run (RUN/result.json, written whole by write_atomic), or
    None when there is none or it cannot be what charnn wrote: not a JSON object, for another run,
    or one of `numbers` missing or not a number (a hand edit, a file from another version). None
    means measure the run again: the run itself is intact, the cache is only its measurement."""
    try:
        res = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(res, dict) or res.get("run") != run:
        return None
    return res if all(is_number(res.get(k)) for k in numbers) else None


def keep_lines(path: Path, keep) -> int:
    """Rewrite the JSON-lines file `path` with only the lines for which keep(line) is true.

    Used on resume to cut logs back to the checkpoint's step. A last line cut short by a crash
    (no newline) is dropped. Returns how many lines were removed.
    """
    if not path.is_file():
        return 0
    raw = path.read_text(encoding="utf-8")
    lines = raw.split("\n")
    complete, rest = lines[:-1], lines[-1]  # rest: "" when the file ends with a newline
    kept = [line for line in complete if line.strip() and keep(line)]
    removed = len(complete) - len(kept) + (1 if rest else 0)
    if removed:
        write_atomic(path, "".join(line + "\n" for line in kept))
    return removed


class RunLock:
    """An OS lock on a run directory: one trainer at a time, released when the process dies.

    It is an advisory ``flock`` on ``RUN/.lock`` (the kernel drops it with the process, however
    that process ends, so a killed trainer never leaves a stale lock). The file holds the PID of
    the holder, for the message a second trainer prints. Readers (sample, eval, inspect) never
    take it.
    """

    NAME = ".lock"

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.fd: int | None = None
        self.created = False  # set by whoever made the folder for this run

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # Windows: no flock; one trainer per run is then the user's care
            return self
        path = self.folder / self.NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise CharnnError(f"cannot write to {self.folder}: {e.strerror or e}; choose a writable --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                pid = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise CharnnError(
                f"{self.folder} is being trained by another process (PID {pid}); wait for it to "
                f"end or stop it, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def refuse_foreign(path: Path, marker: bytes) -> None:
    """Never overwrite a file charnn did not write: it may be the user's."""
    if path.exists():
        if path.is_dir():
            raise CharnnError(f"{path} is a folder; give a file name for the output")
        with open(path, "rb") as f:
            head = f.read(4096)
        if marker not in head:
            raise CharnnError(f"{path} exists and was not written by charnn; choose another output name or move that file away")


def write_outputs(out: Path, stem: str, png_marker: bytes, csv_header: list[str], draw, csv_text: str):
    """`out/STEM.png` (draw(file) writes it) and `out/STEM.csv`, never over files charnn did not write."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CharnnError(f"{out} is a file; --out takes a folder for {stem}.png and {stem}.csv")
    png, csv_path = out / f"{stem}.png", out / f"{stem}.csv"
    refuse_foreign(png, png_marker)
    refuse_foreign(csv_path, ",".join(csv_header).encode())
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    draw(buf)  # a PNG, put in place whole like every other file
    write_atomic(png, buf.getvalue())
    write_atomic(csv_path, csv_text)
    return png, csv_path
