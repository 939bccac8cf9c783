"""bench.library_log: library warnings and log lines go to the log; bench's own warnings and library errors do not."""

from __future__ import annotations

import logging
import warnings

from bench.errors import BenchWarning
from bench.library_log import kept_aside


def test_library_warnings_and_log_lines_are_kept_aside_and_benchs_own_warnings_still_show(tmp_path, caplog):
    shown: list[str] = []
    call_handlers = logging.Logger.callHandlers
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))
        with kept_aside() as log:
            warnings.warn("from a library", DeprecationWarning, stacklevel=1)
            warnings.warn("results.jsonl: line 3 skipped", BenchWarning, stacklevel=1)
            logging.getLogger("torch.bench_test").warning("<enum 'X'> is an Enum subclass")  # torch's own handler
            logging.getLogger("somelib").warning("a note")
            logging.getLogger("somelib").error("a failure")  # errors still reach their handlers
            log.attach(tmp_path / "library.log")  # what came before is written first
            warnings.warn("invalid value encountered in divide", RuntimeWarning, stacklevel=1)
        warnings.warn("after the run", UserWarning, stacklevel=1)
    assert shown == ["results.jsonl: line 3 skipped", "after the run"]
    assert [r.getMessage() for r in caplog.records] == ["a failure"]
    assert logging.Logger.callHandlers is call_handlers
    text = (tmp_path / "library.log").read_text()
    for line in (
        "DeprecationWarning: from a library",
        "WARNING torch.bench_test: <enum 'X'> is an Enum subclass",
        "WARNING somelib: a note",
        "RuntimeWarning: invalid value encountered in divide",
    ):
        assert line in text
    assert "skipped" not in text and "a failure" not in text


def test_with_debug_nothing_is_kept_aside(tmp_path):
    call_handlers, showwarning = logging.Logger.callHandlers, warnings.showwarning
    with kept_aside(enabled=False) as log:
        assert (logging.Logger.callHandlers, warnings.showwarning) == (call_handlers, showwarning)
        log.attach(tmp_path / "library.log")
    assert (tmp_path / "library.log").read_text() == ""
