"""A disk that fills up during a run: recognised wherever it happens, so the run ends cleanly.

The start-up check (bench.cli) refuses a nearly full reports folder, but the disk can fill
while a run goes on (another job, a big artifact). Then every finished row must stay, the
run folder must say why it stopped, and `--resume` must be able to finish it. The runner
turns ENOSPC (or a quota) from any write, the artifact cache, results.jsonl, raw files or
the history, into NoSpaceLeft, which ends the run with exit status 2.
"""

from __future__ import annotations

import errno
import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from bench.errors import UserError

_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# Libraries that lose the errno on the way: sqlite3 (SQLITE_FULL), a worker's reason text.
_TEXTS = ("No space left on device", "Disk quota exceeded", "database or disk is full")
RESERVE_FILE = ".space-reserve"
RESERVE_BYTES = 256 * 1024  # room for run.json when the disk is full: freed to write it
NEARLY_FULL_BYTES = 1 << 20  # below this, a worker's failure is not taken for the scenario's own


class NoSpaceLeft(UserError):
    """A write failed for want of space; `path` is where it was writing."""

    def __init__(self, path: Path | str, message: str | None = None):
        self.path = Path(path)
        super().__init__(message or f"no space left on {self.path}")


def is_no_space(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from, says the disk (or a quota) is full."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, NoSpaceLeft) or (isinstance(exc, OSError) and exc.errno in _ERRNOS):
            return True
        if says_no_space(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def says_no_space(text: str | None) -> bool:
    return bool(text) and any(phrase in text for phrase in _TEXTS)


def where_no_space(exc: BaseException, default: Path) -> Path:
    """The path a no-space error was writing to, when it says; else `default`."""
    while exc is not None:
        if isinstance(exc, NoSpaceLeft):
            return exc.path
        if isinstance(exc, OSError) and exc.filename:
            return Path(exc.filename)
        exc = exc.__cause__ or exc.__context__
    return default


def nearly_full(path: Path) -> bool:
    try:
        return shutil.disk_usage(path).free < NEARLY_FULL_BYTES
    except OSError:
        return False


def write_via_memory(path: Path, save: Callable[[BinaryIO], None]) -> None:
    """Serialize with `save(file)` into memory, then write the bytes to `path` from Python.

    torch's own file writer aborts the whole process (SIGABRT, from a C++ destructor) when
    a write fails on a full disk; a Python write raises OSError(ENOSPC) instead. Costs one
    copy of the file in memory while it is written."""
    buffer = io.BytesIO()
    save(buffer)
    with open(path, "wb") as f:
        f.write(buffer.getbuffer())


def reserve_space(run_dir: Path) -> None:
    """Set aside a little space in the run folder, freed to say why the run stopped when the disk is full."""
    with open(run_dir / RESERVE_FILE, "wb") as f:
        f.write(b"\0" * RESERVE_BYTES)


def release_reserve(run_dir: Path) -> None:
    (run_dir / RESERVE_FILE).unlink(missing_ok=True)
