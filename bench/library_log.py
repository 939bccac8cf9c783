"""Library warnings and log lines kept out of the console, in the run folder's `library.log`.

torch, torchao, transformers, onnxruntime and numpy report through Python's `warnings` and
`logging`, and none of it is the user's to act on: importing torchao logs torch's `_pytree`
Enum deprecation (a `logging` record, printed by the stderr handler torch installs on its own
`torch` logger, so the root logger never sees it), and ONNX Runtime's static quantizer raises
numpy's `RuntimeWarning: invalid value encountered in divide`. Between a run's progress lines
they read as a problem with the run.

Contract, inside `kept_aside()` (`bench run` without --debug):
- a `warnings` warning goes to the log unless its category is `BenchWarning` (bench's own,
  which print as before). By category, not by the file it names: a library warning raised with
  a stacklevel names bench's calling line;
- a WARNING log record from a logger outside `bench` goes to the log instead of to any
  handler; other levels reach their handlers as before (ERROR and above are shown; debug
  records a user asked for, e.g. with TORCH_LOGS, go where torch sends them; torch's trace log
  sends DEBUG records to a handler that drops them unless TORCH_TRACE is set);
- lines are buffered until `attach(path)` (the run folder exists only after the suite is read),
  then appended there; what came before any attach is dropped with the context.
On leaving the context, `warnings.showwarning` and the logging hook are as they were.

Workers write their whole stderr to their own `workers/<scenario>/stderr.log` (the zygote to
`zygote.log`): library output there never reaches the console in the first place.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from bench.errors import BenchWarning

LIBRARY_LOG = "library.log"


class LibraryLog:
    """Where kept-aside lines go: a buffer, then the file `attach` names. Thread-safe: the parent's RSS
    sampler runs in a thread of its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._file: TextIO | None = None
        self.path: Path | None = None

    def write(self, text: str) -> None:
        line = text if text.endswith("\n") else text + "\n"
        with self._lock:
            if self._file is None:
                self._pending.append(line)
                return
            self._file.write(line)
            self._file.flush()  # a killed run keeps what was logged

    def attach(self, path: Path) -> None:
        """From now on append to `path`, starting with what was buffered."""
        self.close()
        with self._lock:
            self.path = path
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
            self._file.writelines(self._pending)
            self._file.flush()
            self._pending = []

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _is_library_record(record: logging.LogRecord) -> bool:
    return logging.WARNING <= record.levelno < logging.ERROR and record.name.split(".")[0] != "bench"


@contextlib.contextmanager
def kept_aside(enabled: bool = True) -> Iterator[LibraryLog]:
    """Route library warnings and log records into the yielded LibraryLog (see the module's contract).
    `enabled` false (--debug) yields a log that is never written to, and changes nothing."""
    log = LibraryLog()
    if not enabled:
        yield log
        return
    shown = warnings.showwarning
    call_handlers = logging.Logger.callHandlers
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")

    def showwarning(
        message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None
    ) -> None:
        if issubclass(category, BenchWarning):
            shown(message, category, filename, lineno, file, line)
        else:
            log.write(warnings.formatwarning(message, category, filename, lineno, line))

    def route_records(logger: logging.Logger, record: logging.LogRecord) -> None:
        if _is_library_record(record):
            log.write(formatter.format(record))
        else:
            call_handlers(logger, record)

    # callHandlers on the class, not a handler: torch and transformers attach their own stderr handlers
    # (with propagate off) whenever they are first imported, which may be after this point.
    warnings.showwarning = showwarning
    logging.Logger.callHandlers = route_records  # type: ignore[method-assign]
    try:
        yield log
    finally:
        warnings.showwarning = shown
        logging.Logger.callHandlers = call_handlers  # type: ignore[method-assign]
        log.close()
