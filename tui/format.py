"""Pure text helpers for the TUI: numbers, durations, sparklines, severity and health marks.

Everything here turns already-analysed values into short strings; nothing computes a
finding or a score (that is ``diag``'s job). Severity and probe health always carry a
word or a symbol, so nothing depends on colour alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from diag.findings import Severity

_BARS = "▁▂▃▄▅▆▇█"


def spark(values: Sequence[float | None], width: int, *, floor: float | None = 0.0) -> str:
    """The last ``width`` values as a one-line sparkline (missing values are blanks).

    ``floor=0`` scales from zero (rates, CPU); ``floor=None`` scales from the minimum,
    which shows a trend on a large base (RSS).

    >>> spark([0, 1, 2, 3, 4, 5, 6, 7], 8)
    '▁▂▃▄▅▆▇█'
    >>> spark([5, 5, 5], 5), spark([0, 0], 2)
    ('███', '▁▁')
    >>> spark([100, 101, 102], 3, floor=None)
    '▁▅█'
    >>> spark([1, None, 2], 3)
    '▅ █'
    >>> spark([1, 2, 3], 0)
    ''
    """
    if width <= 0:
        return ""
    tail = list(values)[-width:]
    known = [v for v in tail if v is not None]
    if not known:
        return " " * len(tail)
    low = min(known) if floor is None else min(floor, min(known))
    high = max(known)
    span = high - low
    out = []
    for v in tail:
        if v is None:
            out.append(" ")
        elif span <= 0:
            out.append(_BARS[0])
        else:
            out.append(_BARS[min(len(_BARS) - 1, int((v - low) / span * (len(_BARS) - 1) + 0.5))])
    return "".join(out)


def bar(fraction: float, width: int) -> str:
    """A horizontal bar for a share (0..1).

    >>> bar(0.5, 10)
    '█████     '
    >>> bar(1.7, 4)
    '████'
    """
    fraction = max(0.0, min(1.0, fraction))
    full = round(fraction * width)
    return "█" * full + " " * (width - full)


def fmt_ms(value: float | None) -> str:
    """A latency.

    >>> [fmt_ms(v) for v in (None, 3.21, 42.4, 999.6, 1234.0)]
    ['–', '3.2 ms', '42 ms', '1.00 s', '1.23 s']
    """
    if value is None:
        return "–"
    if value < 10:
        return f"{value:.1f} ms"
    if value < 999.5:
        return f"{value:.0f} ms"
    return f"{value / 1000:.2f} s"


def fmt_bytes(value: float) -> str:
    """A size in binary units.

    >>> [fmt_bytes(v) for v in (512, 2048, 150 * 2**20, 3 * 2**30)]
    ['512 B', '2.0 KiB', '150.0 MiB', '3.00 GiB']
    """
    if value < 1024:
        return f"{value:.0f} B"
    if value < 2**20:
        return f"{value / 1024:.1f} KiB"
    if value < 2**30:
        return f"{value / 2**20:.1f} MiB"
    return f"{value / 2**30:.2f} GiB"


def fmt_signed_bytes(value: float) -> str:
    """A size change with its sign.

    >>> fmt_signed_bytes(3 * 2**20), fmt_signed_bytes(-2048), fmt_signed_bytes(0)
    ('+3.0 MiB', '-2.0 KiB', '+0 B')
    """
    sign = "-" if value < 0 else "+"
    return sign + fmt_bytes(abs(value))


def fmt_duration(seconds: float) -> str:
    """Run time for the status line.

    >>> [fmt_duration(s) for s in (4.6, 75, 3723)]
    ['4s', '1m15s', '1h02m03s']
    """
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def fmt_count(value: float) -> str:
    """A count, shortened past ten thousand.

    >>> [fmt_count(v) for v in (7, 12345, 2_500_000)]
    ['7', '12.3k', '2.50M']
    """
    if value < 10_000:
        return f"{value:.0f}"
    if value < 1_000_000:
        return f"{value / 1000:.1f}k"
    return f"{value / 1_000_000:.2f}M"


def truncate(text: str, width: int) -> str:
    """One line of at most ``width`` characters, whitespace collapsed.

    >>> truncate("SELECT *\\n  FROM archon_tasks", 16)
    'SELECT * FROM a…'
    >>> truncate("short", 10)
    'short'
    """
    line = " ".join(text.split())
    if width <= 0:
        return ""
    return line if len(line) <= width else line[: width - 1] + "…"


def clip(line: str, width: int) -> str:
    """One line cut to ``width`` characters, keeping its indentation (plan trees, stacks).

    >>> clip("    ->  Seq Scan on archon_tasks", 20)
    '    ->  Seq Scan on…'
    """
    line = line.rstrip()
    if width <= 0:
        return ""
    return line if len(line) <= width else line[: width - 1] + "…"


# Severity: a fixed-width word, so the order is readable without colour.
SEVERITY_TAG = {
    Severity.CRITICAL: "CRIT",
    Severity.HIGH: "HIGH",
    Severity.MEDIUM: "MED ",
    Severity.LOW: "LOW ",
    Severity.INFO: "INFO",
}
SEVERITY_STYLE = {
    Severity.CRITICAL: "bold white on red",
    Severity.HIGH: "bold red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}

# Probe health: a symbol next to the probe's name.
HEALTH_MARK = {"ok": "✓", "degraded": "!", "off": "–", "failed": "✗"}
HEALTH_STYLE = {"ok": "green", "degraded": "yellow", "off": "dim", "failed": "bold red"}

LOAD_MARK = {"running": "▶", "paused": "‖", "stopped": "■", "off": "–"}


def health_mark(state: str) -> str:
    """The symbol for a probe state (unknown states show as ``?``).

    >>> health_mark("ok"), health_mark("failed"), health_mark("weird")
    ('✓', '✗', '?')
    """
    return HEALTH_MARK.get(state, "?")
