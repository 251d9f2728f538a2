"""Turn a ``Report`` (the analysis of the bundle so far) plus the probes' freshest figures
into the ``LiveSnapshot`` the TUI renders. Mapping only: no analysis here.

Two steps, because they run in two processes: ``snapshot_from`` maps the report (in the
analysis worker, ``diag.liveworker``), ``with_probes`` adds what only the running session
knows (attached profilers, the last pg_stat_activity sample, EXPLAINs asked for)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from diag.bundle import Bundle
from diag.live import (
    BlockingRow,
    EndpointRow,
    HotspotRow,
    LiveSnapshot,
    LoadPoint,
    PlanView,
    ProcessPoint,
    ProcessView,
    StatementRow,
    WaitRow,
)
from diag.report import Report

if TYPE_CHECKING:
    from diag.session import SessionContext


def _f(value: Any) -> float | None:
    return None if value is None else float(value)


def plan_view(queryid: int, plan: Mapping[str, Any]) -> PlanView:
    indexes = tuple(
        str(i.get("statement") or i.get("create") or i.get("sql") or i)
        if isinstance(i, Mapping)
        else str(i)
        for i in plan.get("indexes") or ()
    )
    return PlanView(
        queryid=queryid,
        source=str(plan.get("source") or "plan"),
        tree=str(plan.get("tree") or ""),
        tips=tuple(str(t) for t in plan.get("tips") or ()),
        index_advice=indexes,
    )


def snapshot_from(report: Report, bundle: Bundle) -> LiveSnapshot:
    """The report as the TUI shows it; the session's own figures come from ``with_probes``."""
    t0 = bundle.started_at
    load = report.load or {}
    points = tuple(
        LoadPoint(
            t=float(p["t"]),
            users=int(p.get("users") or 0),
            rps=float(p.get("rps") or 0.0),
            fails_per_s=float(p.get("fails_per_s") or 0.0),
            p50_ms=_f(p.get("p50_ms")),
            p95_ms=_f(p.get("p95_ms")),
            p99_ms=_f(p.get("p99_ms")),
        )
        for p in load.get("timeline") or []
    )
    endpoints = tuple(
        EndpointRow(
            name=str(e.get("name")),
            requests=int(e.get("requests") or 0),
            failures=int(e.get("failures") or 0),
            rps=float(e.get("rps") or 0.0),
            p50_ms=_f(e.get("p50_ms")),
            p95_ms=_f(e.get("p95_ms")),
            p99_ms=_f(e.get("p99_ms")),
            max_ms=_f(e.get("max_ms")),
        )
        for e in load.get("endpoints") or []
    )
    processes = tuple(
        ProcessView(
            label=str(p.get("label")),
            pid=int(p.get("pid") or 0),
            alive=not p.get("gone"),
            series=tuple(
                ProcessPoint(t=float(s[0]) - t0, cpu_percent=float(s[1]), rss_bytes=int(s[2]))
                for s in p.get("series") or []
            ),
            leak_verdict=str(p.get("leak_verdict") or ""),
        )
        for p in report.processes
    )
    database = report.database or {}
    waits_json = database.get("waits") or {}
    n_samples = max(int(waits_json.get("samples") or 0), 1)
    waits = tuple(
        WaitRow(wait=str(w["wait"]), sessions=float(w["samples"]) / n_samples)
        for w in waits_json.get("by_wait") or []
    )
    statements = tuple(
        StatementRow(
            queryid=int(s.get("queryid") or 0),
            sql=str(s.get("query") or ""),
            calls=int(s.get("calls") or 0),
            total_ms=float(s.get("total_exec_ms") or 0.0),
            mean_ms=float(s.get("mean_exec_ms") or 0.0),
            rows=int(s.get("rows") or 0),
            share_percent=100 * float(s.get("share_of_db_time") or 0.0),
        )
        for s in database.get("top") or []
    )
    plans = {int(p["queryid"]): plan_view(int(p["queryid"]), p) for p in report.plans}
    hotspots = tuple(
        HotspotRow(
            function=str(h.get("function")),
            process=str(h.get("process") or ""),
            self_percent=float(h.get("self_pct") or 0.0),
            total_percent=float(h.get("total_pct") or 0.0),
            stacks=tuple(str(s) for s in h.get("stacks") or ()),
        )
        for h in report.hotspots
    )
    return LiveSnapshot(
        elapsed_s=0.0,
        phase="",
        shape="",
        load_state="off",
        load=points,
        endpoints=endpoints,
        processes=processes,
        db_time=tuple((float(t) - t0, float(v)) for t, v in database.get("timeline") or []),
        waits=waits,
        hotspots=hotspots,
        statements=statements,
        plans=plans,
        findings=tuple(report.ranked()),
    )


def with_probes(snapshot: LiveSnapshot, ctx: SessionContext) -> LiveSnapshot:
    """``snapshot`` with the session's live figures: profilers attached now, blocking and
    connections from the last pg_stat_activity sample, EXPLAINs asked for from the TUI."""
    with ctx.lock:
        attached = dict(ctx.live.get("profilers") or {})
        activity = ctx.live.get("pg_activity")
        explained = dict(ctx.live.get("plans") or {})
        shape = str(ctx.live.get("shape") or ctx.config.shape)
    blocking: tuple[BlockingRow, ...] = ()
    connections = (0, 0)
    if activity is not None:
        connections = (int(activity.connections), int(activity.max_connections))
        blocking = tuple(
            BlockingRow(
                pid=s.pid,
                blocked_by=tuple(s.blockers),
                wait=f"{s.wait_event_type}:{s.wait_event}",
                seconds=float(s.state_age_s or 0.0),
                sql=str(s.query or ""),
            )
            for s in activity.sessions
            if s.blockers
        )
    return replace(
        snapshot,
        elapsed_s=ctx.elapsed(),
        phase=ctx.phase,
        shape=shape,
        processes=tuple(
            replace(p, profilers=tuple(attached.get(p.pid, ()))) for p in snapshot.processes
        ),
        blocking=blocking,
        connections=connections,
        plans={**snapshot.plans, **explained},
    )
