"""``--fail-on`` gates: small expressions evaluated against a report.

A gate *fails* when its expression is true of the run. Grammar::

    p50|p95|p99|max  (>|>=|<|<=)  NUMBER[ms|s]        latency of all requests
    error_rate       (>|>=)       NUMBER[%]           failed / all requests
    rps              (<|<=)       NUMBER              throughput
    severity         (>=|>)       info|low|medium|high|critical   any finding that severe
    findings         (>|>=)       N                   number of findings
    leak                                              any memory/fd/thread leak finding
    kind:NAME                                         any finding of that kind
    kpi:NAME         (>|>=|<|<=)  NUMBER              the KPI query NAME's mean over the
                                                      measured window (in the KPI's unit)
    regression       (>|>=)       NUMBER%             p95 (or error rate) worse than --baseline

A ``kpi:`` gate on a KPI that produced no value (or that the run did not have) fails with
"no samples": a gate that cannot be checked never passes silently.

>>> parse_gate("p95>500ms").threshold
500.0
>>> parse_gate("error_rate>1%").threshold
1.0
>>> g = parse_gate("kpi:archon_queue_length>=20")
>>> g.metric, g.word, g.op, g.threshold
('kpi', 'archon_queue_length', '>=', 20.0)
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from diag.findings import Severity
from diag.kpi import format_value
from diag.report import GateResult, Report
from probes.errors import UsageError

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_EXPR = re.compile(r"^\s*([a-z_0-9]+)\s*(>=|<=|>|<)\s*([0-9.]+|[a-z]+)\s*(ms|s|%)?\s*$")
_KPI = re.compile(r"^\s*kpi:([a-z][a-z0-9_]*)\s*(>=|<=|>|<)\s*(-?[0-9]*\.?[0-9]+)\s*$")
_LATENCY = {"p50", "p95", "p99", "max"}
LEAK_KINDS = ("memory_leak", "fd_leak", "thread_leak", "fragmentation")


@dataclass(frozen=True)
class Gate:
    expr: str
    metric: str
    op: str = ""
    threshold: float = 0.0
    word: str = ""  # severity name or kind name


def parse_gate(text: str) -> Gate:
    expr = text.strip()
    low = expr.lower()
    if low == "leak":
        return Gate(expr, "leak")
    if low.startswith("kind:") and len(low) > 5:
        return Gate(expr, "kind", word=low[5:])
    if low.startswith("kpi:"):
        kpi = _KPI.match(low)
        if not kpi:
            raise UsageError(
                f"invalid --fail-on {text!r}: use kpi:NAME>NUMBER (or <, >=, <=), "
                "NAME a KPI of the run, NUMBER in the KPI's unit, e.g. kpi:archon_queue_length>20"
            )
        name, op, value = kpi.groups()
        return Gate(expr, "kpi", op, float(value), word=name)
    match = _EXPR.match(low)
    if not match:
        raise UsageError(
            f"invalid --fail-on {text!r}: use e.g. p95>500ms, error_rate>1%, leak, "
            "severity>=critical, regression>20%"
        )
    metric, op, value, unit = match.groups()
    if metric == "severity":
        try:
            Severity.parse(value)
        except ValueError as exc:
            raise UsageError(f"invalid --fail-on {text!r}: {exc}") from None
        return Gate(expr, metric, op, word=value)
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"invalid --fail-on {text!r}: {value!r} is not a number") from None
    if metric in _LATENCY:
        number = number * 1000 if unit == "s" else number
    elif metric not in ("error_rate", "rps", "findings", "regression"):
        raise UsageError(
            f"invalid --fail-on {text!r}: unknown metric {metric!r} (p50, p95, p99, max, "
            "error_rate, rps, severity, findings, leak, kind:NAME, kpi:NAME, regression)"
        )
    return Gate(expr, metric, op, number)


def _totals(report: Report) -> dict[str, float]:
    load = report.load or {}
    totals = load.get("totals") or {}
    return {k: float(v) for k, v in totals.items() if isinstance(v, (int, float))}


def evaluate(gate: Gate, report: Report, baseline: Report | None = None) -> GateResult:
    """Evaluate one gate; ``passed`` is False when the fail-on condition holds."""
    findings = report.ranked()
    if gate.metric == "leak":
        leaks = [f for f in findings if f.kind in LEAK_KINDS]
        return GateResult(
            gate.expr,
            not leaks,
            f"{len(leaks)} leak finding(s)",
            "; ".join(f.title for f in leaks[:3]),
        )
    if gate.metric == "kind":
        hits = [f for f in findings if f.kind == gate.word]
        return GateResult(
            gate.expr,
            not hits,
            f"{len(hits)} {gate.word} finding(s)",
            "; ".join(f.title for f in hits[:3]),
        )
    if gate.metric == "severity":
        level = Severity.parse(gate.word)
        hits = [f for f in findings if _OPS[gate.op](int(f.severity), int(level))]
        return GateResult(
            gate.expr, not hits, f"{len(hits)} finding(s)", "; ".join(f.title for f in hits[:3])
        )
    if gate.metric == "kpi":
        return _kpi(gate, report)
    if gate.metric == "findings":
        n = float(len(findings))
        return GateResult(gate.expr, not _OPS[gate.op](n, gate.threshold), f"{int(n)} findings")
    totals = _totals(report)
    if gate.metric == "regression":
        return _regression(gate, totals, baseline)
    if gate.metric in _LATENCY:
        value = totals.get(f"{gate.metric}_ms")
        if value is None:
            return GateResult(gate.expr, False, "no load data", "the run measured no latency")
        return GateResult(gate.expr, not _OPS[gate.op](value, gate.threshold), f"{value:.0f} ms")
    if gate.metric == "error_rate":
        rate = totals.get("error_rate")
        if rate is None:
            return GateResult(gate.expr, False, "no load data", "the run sent no requests")
        pct = rate * 100
        return GateResult(gate.expr, not _OPS[gate.op](pct, gate.threshold), f"{pct:.2f} %")
    rps = totals.get("rps")
    if rps is None:
        return GateResult(gate.expr, False, "no load data", "the run sent no requests")
    return GateResult(gate.expr, not _OPS[gate.op](rps, gate.threshold), f"{rps:.1f} req/s")


def _kpi(gate: Gate, report: Report) -> GateResult:
    kpi = report.kpi(gate.word)
    if kpi is None:
        names = ", ".join(str(k.get("name")) for k in report.kpis) or "none"
        return GateResult(
            gate.expr, False, "no samples", f"the run has no KPI {gate.word!r} (KPIs: {names})"
        )
    mean = kpi.get("mean")
    if not kpi.get("samples") or not isinstance(mean, (int, float)):
        empty = int(kpi.get("empty") or 0)
        why = f"; its query returned NULL/no row {empty} time(s)" if empty else ""
        return GateResult(
            gate.expr, False, "no samples", f"KPI {gate.word!r} produced no value{why}"
        )
    unit = str(kpi.get("unit") or "")
    actual = f"{float(mean):.4g} {unit}".strip() + " (mean)"
    detail = (
        f"{kpi['samples']} samples, p95 {format_value(kpi.get('p95'), unit)}, "
        f"max {format_value(kpi.get('max'), unit)}"
    )
    return GateResult(gate.expr, not _OPS[gate.op](float(mean), gate.threshold), actual, detail)


def _regression(gate: Gate, totals: dict[str, float], baseline: Report | None) -> GateResult:
    if baseline is None:
        raise UsageError(f"--fail-on {gate.expr!r} needs --baseline BUNDLE")
    base = _totals(baseline)
    worst = 0.0
    parts = []
    for key in ("p95_ms", "p99_ms"):
        if base.get(key) and key in totals:
            change = (totals[key] - base[key]) / base[key] * 100
            parts.append(f"{key[:-3]} {change:+.0f}%")
            worst = max(worst, change)
    if "error_rate" in base and "error_rate" in totals:
        delta_pp = (totals["error_rate"] - base["error_rate"]) * 100
        parts.append(f"errors {delta_pp:+.2f} pp")
    if not parts:
        return GateResult(gate.expr, False, "no comparable load data", "baseline or run lacks load")
    return GateResult(gate.expr, not _OPS[gate.op](worst, gate.threshold), ", ".join(parts))


def evaluate_all(
    exprs: list[str], report: Report, baseline: Report | None = None
) -> list[GateResult]:
    return [evaluate(parse_gate(e), report, baseline) for e in exprs]
