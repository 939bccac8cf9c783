"""Errors a user can fix. The CLI prints them as one paragraph and exits 2. bench's own warnings
are BenchWarning: those reach the console while library warnings are kept aside (bench.library_log)."""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user gave us (a suite file, a flag, a folder)."""

    exit_code = 2


class SuiteError(UserError):
    """A suite file that cannot be used, located as precisely as we can."""

    def __init__(self, path: str, message: str, *, line: int | None = None, field: str | None = None):
        self.path = path
        self.line = line
        self.field = field
        self.message = message
        where = path if line is None else f"{path}, line {line}"
        if field:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")


class Unsupported(Exception):
    """Not a user error: this scenario cannot run as asked; the message says why, for the row's reason."""


class BenchWarning(UserWarning):
    """A warning of bench's own, for the user: it prints even where library warnings are kept aside."""
