"""Figures of the host itself (the matmul peak, the memory bandwidth): each measured by a module of
this package in a fresh interpreter, so that its thread pools are sized at start, and cached as JSON
per environment fingerprint, so that a run measures them once.

`run_probe(args, threads, timeout_s, what)` runs `python -m ARGS` with `threads` threads and returns the
last JSON line it printed, or raises `ProbeFailed` whose message says what failed and why (its exit
code and the tail of its stderr, a timeout, unreadable output): the callers never raise, they keep the
message as their figure's note. `read_cached` / `keep` read and write a cache file; a cache that cannot
be read or written is no cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.measure.child import child_env


class ProbeFailed(Exception):
    """A probe gave no figure; the message is the note the figure keeps."""


def run_probe(args: list[str], threads: int, timeout_s: float, what: str) -> dict[str, Any]:
    """The last JSON line of `python -m ARGS` run fresh with `threads` threads (ProbeFailed: `what` failed)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", *args],
            env=child_env(threads, {}),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout_s,
            check=False,
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            tail = "\n".join(done.stderr.splitlines()[-5:])
            raise ProbeFailed(f"{what} failed (exit code {done.returncode}): {tail}")
        return json.loads(lines[-1])
    except ProbeFailed:
        raise
    except Exception as exc:  # a timeout, a process that could not start, output that is not JSON
        raise ProbeFailed(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def read_cached(path: Path | None) -> dict[str, Any] | None:
    """A cached probe's figures, or None (no cache, no file, or one that does not read)."""
    if path is None or not path.exists():
        return None
    with contextlib.suppress(ValueError, OSError):
        return json.loads(path.read_text(encoding="utf-8"))
    return None


def keep(path: Path | None, figures: dict[str, Any]) -> None:
    """Write a probe's figures to its cache file, atomically (a concurrent run reads all or nothing)."""
    if path is None:
        return
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(figures), encoding="utf-8")
        os.replace(tmp, path)
