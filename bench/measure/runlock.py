"""The run folder lock: one process at a time writes to a run folder.

`bench run` and `bench run --resume` hold an advisory lock (flock) on `run.lock` in the
run folder while they write to it. Two `--resume` of one run at once would otherwise
measure the same scenarios side by side (rows twice, raw files overwritten, figures taken
under each other's load). The kernel releases a flock when its process ends, however it
ends, so a crashed run never leaves its folder locked. The file holds the holder's PID, to
name it in the refusal; readers (report, history, compare) never take the lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from bench.errors import UserError

LOCK_FILE = "run.lock"

# Run folders this process holds, by resolved path: taking a folder again in the same process
# (a test that starts and then resumes a run) is no second writer.
_held: dict[Path, int] = {}


class RunFolderLocked(UserError):
    """Another process is writing to the run folder."""


def lock_run_folder(run_dir: Path) -> None:
    """Take the run folder's lock for this process's lifetime, or raise RunFolderLocked."""
    key = run_dir.resolve()
    if key in _held:
        return
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise RunFolderLocked(
            f"{run_dir} is being written by another bench process (PID {holder}); two writers would measure "
            "the same scenarios side by side and mix their rows. Wait for it to end (or stop it), then try again"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    _held[key] = fd


def unlock_run_folder(run_dir: Path) -> None:
    """Release the lock early (the process's end releases it anyway)."""
    fd = _held.pop(run_dir.resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the only descriptor of the open file releases its flock
