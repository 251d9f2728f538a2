"""Parsing and formatting of the units users type: durations, sizes, percentages."""

from __future__ import annotations

import re

from probes.errors import UsageError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds from ``"60s"``, ``"5m"``, ``"1.5h"``, ``"250ms"`` or a bare number of seconds.

    >>> parse_duration("90s"), parse_duration("2m"), parse_duration("250ms")
    (90.0, 120.0, 0.25)
    """
    match = _DURATION.match(text)
    if not match:
        raise UsageError(f"invalid duration {text!r}: use e.g. 30s, 5m, 1h or 250ms")
    value, unit = match.groups()
    return float(value) * _FACTORS[unit or "s"]


def duration_arg(text: str) -> float:
    """``argparse`` type for durations (argparse turns the error into a usage line)."""
    import argparse

    try:
        return parse_duration(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def format_duration(seconds: float) -> str:
    """``"1m30s"``-style text.

    >>> format_duration(90), format_duration(0.25), format_duration(3725)
    ('1m30s', '250ms', '1h02m')
    """
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds == int(seconds) else f"{seconds:.1f}s"
    if seconds < 3600:
        minutes, secs = divmod(round(seconds), 60)
        return f"{minutes}m{secs:02d}s"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m"


def format_bytes(n: float) -> str:
    """``"12.3 MiB"``-style text.

    >>> format_bytes(1536), format_bytes(3 * 1024**3)
    ('1.5 KiB', '3.0 GiB')
    """
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
