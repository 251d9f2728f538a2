"""KPI queries: user-defined SQL probes sampled over a run as time series.

A KPI is ``name``, ``query``, ``interval`` and ``unit`` (``[[kpi]]`` tables in the run's
TOML, or a shipped preset such as ``kpi_preset = "archon"``). The query must be a single
read-only SELECT (checked with PostgreSQL's own parser, ``diag.sqlsafety``); its value is
the first column of the first row, NULL or no row meaning "no value this time".

This module parses and validates specs and summarises samples (pure functions); the
sampling itself is ``diag.session_kpi.KpiProbe``, the report section
``diag.analysis.kpi_section``. Must not: open connections or read bundles.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from diag.units import parse_duration
from probes.errors import UsageError

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 3600.0
DEFAULT_INTERVAL_S = 5.0
SERIES_POINTS = 300  # the report's downsampled series keeps at most this many points
_KEYS = ("name", "query", "interval", "unit")

VolatilityLookup = Callable[[list[str]], dict[str, set[str]]]


@dataclass(frozen=True)
class KpiSpec:
    name: str
    query: str
    interval_s: float = DEFAULT_INTERVAL_S
    unit: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "query": self.query,
            "interval_s": self.interval_s,
            "unit": self.unit,
        }


@dataclass(frozen=True)
class KpiSample:
    """One sample of one KPI (``value`` None: the query returned NULL or no row)."""

    name: str
    value: float | None
    unit: str
    t: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "unit": self.unit, "t": self.t}


# ---- validation --------------------------------------------------------------------------


def check_query(name: str, text: str, volatility: VolatilityLookup | None = None) -> None:
    """Refuse (one-line ``UsageError``) anything but a single read-only SELECT.

    Without ``volatility`` (no server at hand: config time) functions are not judged
    except the always-refused ones; with it (at the probe's start) volatile functions
    are refused as for EXPLAIN ANALYZE.
    """
    from pglast import ast, parse_sql
    from pglast.parser import ParseError

    from diag.sqlsafety import Refused, check_analyzable, check_plannable

    prefix = f"KPI {name!r} refused"
    if not text.strip():
        raise UsageError(f"{prefix}: the query is empty")
    try:
        stmts = parse_sql(text)
    except ParseError as exc:
        raise UsageError(f"{prefix}: not valid SQL for PostgreSQL: {exc}") from None
    if len(stmts) != 1:
        raise UsageError(
            f"{prefix}: {len(stmts)} statements in the query; give one read-only SELECT"
        )
    stmt = stmts[0].stmt
    if not isinstance(stmt, ast.SelectStmt):
        kind = type(stmt).__name__.removesuffix("Stmt").upper() if stmt is not None else "EMPTY"
        raise UsageError(
            f"{prefix}: {kind} is not a SELECT; a KPI query must be a single read-only SELECT"
        )
    try:
        if check_plannable(text).placeholders:
            raise UsageError(f"{prefix}: $n placeholders have no values in a KPI query")
        check_analyzable(text, volatility if volatility is not None else _judge_on_server)
    except Refused as exc:
        reason = str(exc).removeprefix("refused: ")
        raise UsageError(f"{prefix}: {reason}") from None


def _judge_on_server(names: list[str]) -> dict[str, set[str]]:
    """At config time nothing is known about functions: the probe checks them on start."""
    return {}


def parse_kpi(entry: Any, where: str) -> KpiSpec:
    """One ``[[kpi]]`` table → a checked spec (``where`` prefixes error messages)."""
    if not isinstance(entry, Mapping):
        raise UsageError(f"{where}: each [[kpi]] must be a table with name, query, interval, unit")
    unknown = sorted(set(entry) - set(_KEYS))
    if unknown:
        raise UsageError(
            f"{where}: unknown key {unknown[0]!r} in [[kpi]] (keys: {', '.join(_KEYS)})"
        )
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise UsageError(
            f"{where}: [[kpi]] name {name!r} must be lower case letters, digits and _ "
            "(starting with a letter), e.g. queue_length"
        )
    query = entry.get("query")
    if not isinstance(query, str):
        raise UsageError(f"{where}: KPI {name!r} needs a query (a single read-only SELECT)")
    interval = entry.get("interval", DEFAULT_INTERVAL_S)
    try:
        if isinstance(interval, bool):
            raise UsageError("not a duration")
        seconds = parse_duration(interval) if isinstance(interval, str) else float(interval)
    except (UsageError, TypeError, ValueError):
        raise UsageError(
            f'{where}: KPI {name!r} interval {interval!r} is not a duration (e.g. "5s")'
        ) from None
    if not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
        raise UsageError(
            f"{where}: KPI {name!r} interval must be between {MIN_INTERVAL_S:.0f}s and 1h"
        )
    unit = entry.get("unit", "")
    if not isinstance(unit, str) or len(unit) > 24:
        raise UsageError(f'{where}: KPI {name!r} unit must be a short text, e.g. "ms"')
    try:
        check_query(name, query)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None
    return KpiSpec(name, query.strip(), seconds, unit)


def check_unique(specs: Sequence[KpiSpec]) -> None:
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise UsageError(f"KPI {spec.name!r} is defined twice; KPI names must be unique")
        seen.add(spec.name)


# ---- presets -----------------------------------------------------------------------------

# name, sql file (sql/kpi_<file>.sql), interval, unit
_ARCHON = (
    ("archon_queue_length", "archon_queue_length", 2.0, "jobs"),
    ("archon_queue_wait_p50_ms", "archon_queue_wait", 5.0, "ms"),
    ("archon_llm_latency_p50_ms", "archon_llm_latency", 5.0, "ms"),
    ("archon_ttft_p50_ms", "archon_ttft", 5.0, "ms"),
    ("archon_job_completion_p50_ms", "archon_completion", 5.0, "ms"),
)
PRESETS = {"archon": _ARCHON}


def preset_kpis(name: str) -> tuple[KpiSpec, ...]:
    """The shipped KPIs of a preset (``archon``: the agent-job queue of Archon)."""
    from probes.sqlfiles import load_sql

    rows = PRESETS.get(name)
    if rows is None:
        raise UsageError(f"unknown KPI preset {name!r} (one of {', '.join(PRESETS)})")
    return tuple(
        KpiSpec(kpi, load_sql(f"kpi_{file}"), interval, unit) for kpi, file, interval, unit in rows
    )


def spec_from_json(data: Mapping[str, Any]) -> KpiSpec:
    """A spec as the bundle's manifest records it (``KpiSpec.to_json``)."""
    return KpiSpec(
        str(data.get("name", "")),
        str(data.get("query", "")),
        float(data.get("interval_s") or DEFAULT_INTERVAL_S),
        str(data.get("unit") or ""),
    )


# ---- values and summaries ----------------------------------------------------------------


def to_value(raw: Any) -> float | None:
    """The KPI's number from the first column (None for NULL); ValueError if not numeric."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    value = float(raw)  # int, float, Decimal; text raises ValueError/TypeError
    if math.isnan(value) or math.isinf(value):
        return None
    return value


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(
    name: str,
    unit: str,
    samples: Sequence[tuple[float, float | None]],
    t0: float,
    start: float | None = None,
    end: float | None = None,
) -> dict[str, Any]:
    """The report entry of one KPI from its (epoch t, value) samples.

    Statistics cover the measured window [start, end] when it is known (the whole run
    otherwise); ``series`` covers the whole run, t in seconds since ``t0``, downsampled.
    """
    inside = [
        (t, v)
        for t, v in samples
        if (start is None or t >= start) and (end is None or t <= end + 0.5)
    ]
    values = [v for _, v in inside if v is not None]
    points = [(t, v) for t, v in samples if v is not None]
    step = max(1, math.ceil(len(points) / SERIES_POINTS))
    series = [[round(t - t0, 2), _round(v)] for t, v in points[::step]]
    return {
        "name": name,
        "unit": unit,
        "samples": len(values),
        "empty": len(inside) - len(values),  # sampled, but NULL / no row
        "last": _round(values[-1]) if values else None,
        "mean": _round(sum(values) / len(values)) if values else None,
        "min": _round(min(values)) if values else None,
        "max": _round(max(values)) if values else None,
        "p95": _round(percentile(values, 95)) if values else None,
        "window": "measured" if start is not None else "run",
        "series": series,
    }


def _round(value: float) -> float:
    return round(value, 3)


def format_value(value: Any, unit: str = "") -> str:
    """A value as text: 4 significant digits and the unit (``"-"`` for none)."""
    if value is None:
        return "-"
    text = f"{float(value):.4g}"
    return f"{text} {unit}".strip()
