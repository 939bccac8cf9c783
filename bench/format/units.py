"""Units: the byte multiples and how a duration in seconds is written (in milliseconds, or for a
person waiting on a run). Every figure is kept in base units (seconds, bytes) and converted only
where it is shown."""

from __future__ import annotations

KIB = 1024
MIB = 1024**2
GIB = 1024**3


def ms_readable(seconds: float) -> str:
    """'123.4 ms', '1.234 ms', '0.1234 ms': four significant-ish digits at any scale (history, compare)."""
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.1f} ms"
    if ms >= 1:
        return f"{ms:.3f} ms"
    return f"{ms:.4f} ms"


def ms_fixed(seconds: float | None, missing: str = "-") -> str:
    """'1.234 ms': three decimals, for columns of latencies of one scale (console, profiles)."""
    return missing if seconds is None else f"{seconds * 1e3:.3f} ms"


def ms_number(seconds: float | None) -> str:
    """'1.23': three significant digits without the unit, for tables whose header says ms."""
    return "-" if seconds is None else f"{seconds * 1e3:.3g}"


def duration_readable(seconds: float) -> str:
    """'40 s', '3 min 20 s', '2 h 05 min': to the second under an hour, to the minute above (the console's ETA)."""
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min {total % 60:02d} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"
