"""Analysis of a load run: the stress knee, the spike recovery time, load findings,
and the text views of live ticks and final per-endpoint stats.

Pure functions over the records of ``probes.locust`` (never imports locust). Findings use
the shared scale (``diag.findings``): ``error_burst`` scores the share of requests that
failed; ``latency`` scores the share of observed request time spent in an endpoint's
tail (the time above its median), i.e. what bringing the slow requests down to the median
would recover.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from diag.findings import Finding, Location
from diag.units import format_duration
from probes.loadshapes import Limits
from probes.locust import EndpointRow, LoadResult, LoadTick, StageSummary

# -- stress: the knee ------------------------------------------------------------------


@dataclass(frozen=True)
class Knee:
    """The highest load that still met the limits (``users`` None: not even the first step)."""

    users: int | None
    rps: float | None
    p95_ms: float | None
    error_rate: float | None
    crossed_users: int | None  # the first step over the limits (None: never crossed)
    reason: str | None  # why that step crossed
    limits: Limits

    def describe(self) -> str:
        if self.users is None:
            return f"no knee: the first step ({self.crossed_users} users) already crossed: " + (
                self.reason or "limits"
            )
        text = (
            f"knee at {self.users} users: {self.rps or 0:.1f} req/s, "
            f"p95 {_ms(self.p95_ms)}, errors {(self.error_rate or 0):.1%}"
        )
        if self.crossed_users is None:
            return text + " (limits never crossed: the knee is above the tested range)"
        return text + f"; {self.crossed_users} users crossed: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def find_knee(stages: Sequence[StageSummary], limits: Limits) -> Knee | None:
    """Walk the steps in order; the knee is the last one before the first crossing.

    A stage without a verdict (e.g. cut short) is judged here with the same limits.
    """
    # a stage under manual control (paused, users changed by hand) says nothing about
    # the shape's steps: leave it out
    ordered = sorted((s for s in stages if not s.manual), key=lambda s: s.index)
    if not ordered:
        return None
    best: StageSummary | None = None
    for stage in ordered:
        reason = (
            stage.reason
            if stage.verdict is not None
            else limits.crossed_by(stage.error_rate, stage.p95_ms, stage.requests)
        )
        crossed = stage.verdict == "crossed" or (stage.verdict is None and reason is not None)
        if crossed:
            if stage.partial and stage.requests == 0 and best is not None:
                break  # stopped before the step produced anything: not evidence of a crossing
            return Knee(
                users=best.target_users if best else None,
                rps=best.rps if best else None,
                p95_ms=best.p95_ms if best else None,
                error_rate=best.error_rate if best else None,
                crossed_users=stage.target_users,
                reason=reason,
                limits=limits,
            )
        best = stage
    assert best is not None
    return Knee(best.target_users, best.rps, best.p95_ms, best.error_rate, None, None, limits)


# -- spike: the recovery time -----------------------------------------------------------


@dataclass(frozen=True)
class Recovery:
    baseline_p95_ms: float | None
    peak_p95_ms: float | None
    threshold_p95_ms: float | None
    recovered: bool
    recovery_s: float | None  # from the end of the spike until healthy for `hold` ticks
    observed_s: float  # how long after the spike the run went on

    def describe(self) -> str:
        head = f"baseline p95 {_ms(self.baseline_p95_ms)}, spike peak p95 {_ms(self.peak_p95_ms)}"
        if self.recovered and self.recovery_s is not None:
            return f"{head}; recovered {format_duration(self.recovery_s)} after the spike"
        return f"{head}; not recovered within {format_duration(self.observed_s)} after the spike"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def recovery_time(
    ticks: Sequence[LoadTick],
    stages: Sequence[StageSummary] = (),
    *,
    factor: float = 1.5,
    floor_ms: float = 5.0,
    hold: int = 3,
    max_error_rate: float = 0.01,
) -> Recovery | None:
    """Seconds from the end of the ``spike`` stage until the ``recovery`` stage is healthy
    (p95 within ``factor`` x baseline, and at least ``floor_ms`` above it; errors back at the
    baseline rate) for ``hold`` consecutive ticks. None when the run had no spike."""
    # ticks under manual control (paused, users set by hand) are not the shape's
    ticks = [t for t in ticks if t.mode == "plan"]
    spike = [t for t in ticks if t.stage == "spike"]
    after = [t for t in ticks if t.stage == "recovery"]
    if not spike or not after:
        return None
    base_stage = next((s for s in stages if s.name == "baseline"), None)
    base_ticks = [t for t in ticks if t.stage == "baseline" and t.p95_ms is not None]
    if base_stage is not None and base_stage.p95_ms is not None:
        baseline: float | None = base_stage.p95_ms
        base_err = base_stage.error_rate
    elif base_ticks:
        settled = base_ticks[len(base_ticks) // 3 :] or base_ticks
        baseline = statistics.median(t.p95_ms for t in settled if t.p95_ms is not None)
        base_err = sum(t.failures for t in settled) / max(1, sum(t.requests for t in settled))
    else:
        baseline, base_err = None, 0.0
    peaks = [t.p95_ms for t in (*spike, *after) if t.p95_ms is not None]
    peak = max(peaks) if peaks else None
    spike_end = after[0].elapsed - after[0].interval
    rec_stage = next((s for s in stages if s.name == "recovery"), None)
    if rec_stage is not None:
        spike_end = rec_stage.start_elapsed
    observed = max(0.0, after[-1].elapsed - spike_end)
    if baseline is None:
        return Recovery(None, peak, None, False, None, observed)
    threshold = max(baseline * factor, baseline + floor_ms)
    err_limit = base_err + max_error_rate

    def healthy(t: LoadTick) -> bool:
        if t.requests == 0 or t.p95_ms is None:
            return False
        return t.p95_ms <= threshold and t.failures / t.requests <= err_limit

    for i in range(len(after) - hold + 1):
        if all(healthy(t) for t in after[i : i + hold]):
            start = after[i].elapsed - after[i].interval
            return Recovery(baseline, peak, threshold, True, max(0.0, start - spike_end), observed)
    return Recovery(baseline, peak, threshold, False, None, observed)


# -- findings ---------------------------------------------------------------------------


def _time_ms(row: EndpointRow) -> float:
    if row.histogram:
        return float(sum(bucket * n for bucket, n in row.histogram))
    return row.avg_ms * row.requests


def tail_ms(row: EndpointRow) -> float:
    """Request time above the endpoint's median (what a median-fast tail would save)."""
    if not row.histogram or row.p50_ms is None:
        return 0.0
    p50 = row.p50_ms
    return float(sum((bucket - p50) * n for bucket, n in row.histogram if bucket > p50))


def error_bursts(
    ticks: Sequence[LoadTick], min_rate: float = 0.1
) -> list[tuple[float, float, int]]:
    """(start, end, failures) of runs of ticks where >= ``min_rate`` of requests failed."""
    bursts: list[tuple[float, float, int]] = []
    start: float | None = None
    end = 0.0
    failed = 0
    for t in ticks:
        bad = t.failures > 0 and t.failures >= min_rate * max(t.requests, 1)
        if bad:
            if start is None:
                start, failed = t.elapsed - t.interval, 0
            end, failed = t.elapsed, failed + t.failures
        elif start is not None:
            bursts.append((round(start, 3), round(end, 3), failed))
            start = None
    if start is not None:
        bursts.append((round(start, 3), round(end, 3), failed))
    return bursts


def load_findings(
    result: LoadResult, min_requests: int = 20, min_p95_ms: float = 50.0
) -> list[Finding]:
    """Error and latency findings; a tail below ``min_p95_ms`` is not worth a finding."""
    findings: list[Finding] = []
    total = result.total
    if result.all_refused:
        findings.append(
            Finding(
                kind="error_burst",
                title=f"every request to {result.host} was refused",
                score=100.0,
                score_explanation="100% of the requests failed: nothing was served.",
                recommendation=f"start the service at {result.host}, or pass --host",
                location=Location(endpoint=result.host),
                evidence={"requests": total.requests, "errors": [e.error for e in result.errors]},
                source="locust",
            )
        )
        return findings
    bursts = error_bursts(result.ticks)
    for row in result.endpoints:
        if row.failures < 3 or row.fail_ratio < 0.01 or total.requests == 0:
            continue
        share = 100.0 * row.failures / total.requests
        errors = [e for e in result.errors if e.name == row.name and e.method == row.method]
        top = errors[0].error if errors else "see the error table"
        findings.append(
            Finding(
                kind="error_burst",
                title=f"{row.fail_ratio:.0%} of {row.label} failed ({top[:80]})",
                score=round(share, 2),
                score_explanation=(
                    f"{row.failures} of the run's {total.requests} requests ({share:.1f}%) "
                    "failed here; fixing it would serve them."
                ),
                recommendation="read the error text; check the service's logs for this route",
                location=Location(endpoint=row.label),
                evidence={
                    "failures": row.failures,
                    "requests": row.requests,
                    "errors": [(e.error, e.occurrences) for e in errors[:5]],
                    "bursts": bursts[:10],
                },
                source="locust",
            )
        )
    all_time = sum(_time_ms(r) for r in result.endpoints)
    for row in result.endpoints:
        if row.requests < min_requests or all_time <= 0 or row.p50_ms is None:
            continue
        tail = tail_ms(row)
        score = 100.0 * tail / all_time
        p95 = row.p95_ms or 0.0
        if score < 1.0 or p95 < min_p95_ms or p95 < 1.5 * max(row.p50_ms, 1.0):
            continue
        findings.append(
            Finding(
                kind="latency",
                title=(
                    f"{row.label}: p95 {_ms(row.p95_ms)} is "
                    f"{(row.p95_ms or 0) / max(row.p50_ms, 1.0):.1f}x its median {_ms(row.p50_ms)}"
                ),
                score=round(score, 2),
                score_explanation=(
                    f"time above this endpoint's median is {score:.1f}% of all observed "
                    "request time; serving the slow requests at the median would recover it."
                ),
                recommendation=(
                    "profile this route under load (CPU hotspots, database waits, pool queueing)"
                ),
                location=Location(endpoint=row.label),
                evidence={
                    "requests": row.requests,
                    "p50_ms": row.p50_ms,
                    "p95_ms": row.p95_ms,
                    "p99_ms": row.p99_ms,
                    "max_ms": row.max_ms,
                    "rps": row.rps,
                },
                source="locust",
            )
        )
    return findings


@dataclass(frozen=True)
class LoadAnalysis:
    knee: Knee | None
    recovery: Recovery | None
    findings: tuple[Finding, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "analysis",
            "knee": self.knee.to_json() if self.knee else None,
            "recovery": self.recovery.to_json() if self.recovery else None,
            "findings": [f.to_json() for f in self.findings],
        }


def analyse(result: LoadResult) -> LoadAnalysis:
    plan = result.plan
    knee = find_knee(result.stages, plan.limits) if plan.kind == "stress" and plan.limits else None
    recovery = recovery_time(result.ticks, result.stages) if plan.kind == "spike" else None
    return LoadAnalysis(knee, recovery, tuple(load_findings(result)))


# -- text views ---------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f}s" if value >= 10_000 else f"{value:.0f}ms"


def live_line(tick: LoadTick) -> str:
    """One compact line (< 80 columns for ordinary numbers) for a terminal.

    >>> from probes.locust import LoadTick
    >>> line = live_line(LoadTick(1.0, 12.0, "running", 20, 20, "hold", 0, None, 1.0, 150, 0,
    ...                           150.0, 0.0, 12, 40, 80, 15.5, 1834, 0, 0))
    >>> line[:45]
    ' 12s running  users 20/20  150.0 rps  0.0 err'
    >>> line[45:]
    '/s  p50 12ms p95 40ms p99 80ms  1834 req 0 err  hold'
    """
    users = (
        f"{tick.users}/{tick.target_users}" if tick.target_users is not None else str(tick.users)
    )
    workers = f" w{tick.workers}" if tick.workers is not None else ""
    return (
        f"{format_duration(tick.elapsed) if tick.elapsed >= 1 else '0s':>4} {tick.state}{workers}"
        f"  users {users}  {tick.rps:.1f} rps  {tick.fail_per_s:.1f} err/s"
        f"  p50 {_ms(tick.p50_ms)} p95 {_ms(tick.p95_ms)} p99 {_ms(tick.p99_ms)}"
        f"  {tick.total_requests} req {tick.total_failures} err"
        + (f"  {tick.stage}" if tick.stage else "")
    )


def endpoint_table(result: LoadResult, name_width: int = 44) -> str:
    """The final per-endpoint table (Locust's own columns, percentiles from histograms)."""
    head = (
        f"{'endpoint':<{name_width}} {'reqs':>7} {'fails':>6} {'avg':>7} {'p50':>7} "
        f"{'p95':>7} {'p99':>7} {'max':>7} {'rps':>7}"
    )
    lines = [head, "-" * len(head)]

    def fmt(row: EndpointRow) -> str:
        label = row.label if row.name != "Aggregated" else "Aggregated"
        if len(label) > name_width:
            label = label[: name_width - 1] + "…"
        return (
            f"{label:<{name_width}} {row.requests:>7} {row.failures:>6} {_ms(row.avg_ms):>7} "
            f"{_ms(row.p50_ms):>7} {_ms(row.p95_ms):>7} {_ms(row.p99_ms):>7} "
            f"{_ms(row.max_ms):>7} {row.rps:>7.1f}"
        )

    lines += [fmt(r) for r in result.endpoints]
    lines += ["-" * len(head), fmt(result.total)]
    return "\n".join(lines)


def stage_table(stages: Sequence[StageSummary]) -> str:
    lines = [f"{'stage':<12} {'users':>6} {'req/s':>8} {'p95':>8} {'errors':>7}  verdict"]
    for s in sorted(stages, key=lambda s: s.index):
        verdict = s.verdict or ("partial" if s.partial else "")
        if s.reason:
            verdict += f" ({s.reason})"
        lines.append(
            f"{s.name:<12} {s.target_users:>6} {s.rps:>8.1f} {_ms(s.p95_ms):>8} "
            f"{s.error_rate:>7.1%}  {verdict}"
        )
    return "\n".join(lines)
