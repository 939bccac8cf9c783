"""Errors a user can fix (the CLI prints them as one paragraph and exits 2), and the exceptions that
become a row's reason instead: `Unsupported`, `CompileFailed`. bench's own warnings are
BenchWarning: those reach the console while library warnings are kept aside (bench.library_log)."""

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


class CompileFailed(Exception):
    """The compiler refused the model; the message is its first meaningful line and a hint."""


def first_error_line(exc: BaseException) -> str:
    """The compiler's first meaningful line: Dynamo and Inductor wrap the real error in pages of
    context (the user stack, 'Set TORCHDYNAMO_VERBOSE=1' advice); keep its first non-boilerplate line."""
    skip = ("Traceback", "File ", "Set TORCH", "You can suppress", "from user code", "To log", "Explanation")
    for line in str(exc).splitlines():
        text = line.strip()
        if text and not text.startswith(skip):
            return text if len(text) <= 300 else text[:297] + "..."
    return type(exc).__name__
