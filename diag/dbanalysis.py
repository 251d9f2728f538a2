"""Database analysis: statement deltas, activity samples, health and plans -> Findings.

Score (same meaning as every other finding, see ``diag.findings``): the percentage of the
database time observed in the window that fixing the finding could recover. Database
time is the execution time of the top-level statements in the window
(pg_stat_statements delta, archon-diag's own queries excluded); for waits seen by
sampling, the share of active-session samples. A finding that is not about time
(unused indexes, stale statistics) gets a small fixed score and says so.

``analyze_window`` is pure (recorded inputs in, findings out). ``diagnose`` is the driver
that talks to the server: texts, plans (auto_explain first, then generic), index advice,
health, and then ``analyze_window``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from diag.findings import Finding, Location, rank
from diag.indexadvice import IndexSuggestion, Skipped, advise
from diag.plans import JsonlogPlans, Plan, estimated_plan
from diag.plantips import PlanTip, tips_for
from diag.sqlsafety import Refused
from probes.postgres import (
    ActivitySample,
    Conn,
    HealthReport,
    StatementCounters,
    StatementText,
    StatementWindow,
    WindowData,
    fetch_texts,
    health,
    server_info,
)
from probes.postgres.sqltext import one_line, redact_literals

SOURCE = "postgres"
REPORT_SCHEMA = "archon-diag.db/1"


@dataclass(frozen=True)
class DbThresholds:
    slow_mean_ms: float = 20.0  # FIELD-NOTES: >= 20 ms mean ...
    slow_min_calls: int = 10  # ... and >= 100 calls over a long window; short windows: 10
    top_statements: int = 10  # statements that get plans
    min_share: float = 0.01  # statements below 1 % of DB time get no plan
    n_plus_one_max_mean_ms: float = 5.0
    n_plus_one_max_rows: float = 10.0
    n_plus_one_per_request: float = 5.0
    n_plus_one_calls_per_s: float = 20.0  # without request counts
    lock_min_share: float = 0.02
    idle_in_tx_s: float = 5.0
    connections_near_max: float = 0.9


# ---------------------------------------------------------------- plans per statement


@dataclass(frozen=True)
class PlanReport:
    queryid: int
    plan: Plan | None
    tips: tuple[PlanTip, ...] = ()
    indexes: tuple[IndexSuggestion, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "queryid": self.queryid,
            "plan": self.plan.to_json() if self.plan else None,
            "tips": [t.to_json() for t in self.tips],
            "indexes": [i.to_json() for i in self.indexes],
            "skipped": [s.to_json() for s in self.skipped],
            "note": self.note,
        }


def plan_report(
    conn: Conn,
    queryid: int | None,
    text: str | None,
    *,
    plan: Plan | None = None,
    jsonlog: JsonlogPlans | None = None,
    stale_tables: frozenset[str] = frozenset(),
    server_version_num: int | None = None,
) -> PlanReport:
    """Plan, tips and index advice for one statement (auto_explain plan when the jsonlog
    has one for ``queryid``, else a generic/estimated plan of ``text``)."""
    qid = queryid or 0
    notes: list[str] = []
    if plan is None and jsonlog is not None and queryid is not None:
        plan = jsonlog.plan_for(queryid)
    if plan is None and text:
        try:
            plan = estimated_plan(conn, text, server_version_num=server_version_num)
        except Refused as exc:
            return PlanReport(qid, None, note=f"no plan: {exc}")
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return PlanReport(qid, None, note=f"no plan: {redact_literals(first)}")
    if plan is None:
        return PlanReport(qid, None, note="no plan: no auto_explain record and no text")
    tips = tuple(tips_for(plan, stale_tables=stale_tables))

    replan = None
    if text:
        plannable_text = text

        def replan(c: Conn) -> Plan:
            return estimated_plan(c, plannable_text, server_version_num=server_version_num)

    try:
        indexes, skipped = advise(conn, plan, replan=replan)
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        indexes, skipped = [], []
        notes.append(f"index advice skipped: {str(exc).strip().splitlines()[0]}")
    notes.append(f"plan from {plan.source}")
    return PlanReport(qid, plan, tips, tuple(indexes), tuple(skipped), "; ".join(notes))


# ---------------------------------------------------------------- the report


@dataclass(frozen=True)
class WaitSummary:
    samples: int
    interval_s: float
    active_samples: int  # sum over samples of active sessions
    by_wait: tuple[tuple[str, int], ...]  # "Lock:transactionid" -> count ("CPU" = no wait)
    by_query: tuple[tuple[int, int], ...]  # query_id -> active sample count
    peak_connections: int
    max_connections: int
    sample_cost_ms_p50: float

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "interval_s": self.interval_s,
            "active_samples": self.active_samples,
            "average_active_sessions": self.active_samples / self.samples if self.samples else 0,
            "by_wait": [{"wait": k, "samples": v} for k, v in self.by_wait],
            "by_query": [{"queryid": k, "samples": v} for k, v in self.by_query],
            "peak_connections": self.peak_connections,
            "max_connections": self.max_connections,
            "sample_cost_ms_p50": self.sample_cost_ms_p50,
        }


def summarize_waits(samples: Sequence[ActivitySample]) -> WaitSummary:
    by_wait: Counter[str] = Counter()
    by_query: Counter[int] = Counter()
    active = 0
    for sample in samples:
        for s in sample.sessions:
            if not s.active:
                continue
            active += 1
            key = f"{s.wait_event_type}:{s.wait_event}" if s.wait_event_type else "CPU"
            by_wait[key] += 1
            if s.query_id:
                by_query[s.query_id] += 1
    costs = sorted(s.cost_ms for s in samples)
    interval = (samples[-1].t - samples[0].t) / (len(samples) - 1) if len(samples) > 1 else 0.0
    return WaitSummary(
        samples=len(samples),
        interval_s=interval,
        active_samples=active,
        by_wait=tuple(by_wait.most_common(10)),
        by_query=tuple(by_query.most_common(10)),
        peak_connections=max((s.connections for s in samples), default=0),
        max_connections=max((s.max_connections for s in samples), default=0),
        sample_cost_ms_p50=costs[len(costs) // 2] if costs else 0.0,
    )


@dataclass(frozen=True)
class DbReport:
    """Everything ``archon-diag db`` shows; ``to_json`` is the ``--format json`` output."""

    dsn: str  # redacted
    server_version: str
    window: StatementWindow
    texts: Mapping[int, StatementText]
    waits: WaitSummary
    health: HealthReport | None
    plans: Mapping[int, PlanReport]
    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def user_statements(self) -> list[StatementCounters]:
        return _user_statements(self.window, self.texts)

    def top(self, by: str, n: int = 10) -> list[StatementCounters]:
        return sorted(self.user_statements(), key=lambda s: float(getattr(s, by)), reverse=True)[:n]

    def to_json(self) -> dict[str, Any]:
        db_time = _db_time(self.window, self.texts)
        tops = {}
        for by in (
            "total_exec_ms",
            "mean_exec_ms",
            "calls",
            "rows",
            "shared_blks_read",
            "temp_blks_written",
        ):
            tops[by] = [
                {
                    **s.to_json(),
                    "share_of_db_time": s.total_exec_ms / db_time if db_time else 0.0,
                    "query": _text(self.texts, s.queryid),
                }
                for s in self.top(by)
                if float(getattr(s, by)) > 0
            ]
        return {
            "schema": REPORT_SCHEMA,
            "dsn": self.dsn,
            "server_version": self.server_version,
            "window": {
                "started": self.window.started,
                "ended": self.window.ended,
                "seconds": self.window.seconds,
                "db_time_ms": db_time,
                "statements": len(self.user_statements()),
                "reset_seen": self.window.reset_seen,
            },
            "top": tops,
            "waits": self.waits.to_json(),
            "health": self.health.to_json() if self.health else None,
            "plans": {str(k): v.to_json() for k, v in self.plans.items()},
            "findings": [f.to_json() for f in self.findings],
            "notes": list(self.notes),
        }


def _text(texts: Mapping[int, StatementText], queryid: int) -> str | None:
    found = texts.get(queryid)
    return redact_literals(found.query) if found else None


def _user_statements(
    window: StatementWindow, texts: Mapping[int, StatementText]
) -> list[StatementCounters]:
    return [s for s in window.statements if not (s.queryid in texts and texts[s.queryid].is_probe)]


def _db_time(window: StatementWindow, texts: Mapping[int, StatementText]) -> float:
    return sum(s.total_exec_ms for s in _user_statements(window, texts) if s.toplevel)


def diagnose(
    conn: Conn,
    data: WindowData,
    *,
    dsn_redacted: str = "",
    jsonlog: JsonlogPlans | None = None,
    request_counts: Mapping[str, int] | None = None,
    with_health: bool = True,
    thresholds: DbThresholds | None = None,
) -> DbReport:
    """Fetch texts, health and plans for a collected window and analyse it."""
    th = thresholds or DbThresholds()
    window = data.statements
    texts = fetch_texts(conn, (s.queryid for s in window.statements))
    report_health = health(conn) if with_health else None
    stale = (
        frozenset(t.relname for t in report_health.stale_tables) if report_health else frozenset()
    )
    if jsonlog is not None:
        jsonlog.poll()
    db_time = _db_time(window, texts)
    plans: dict[int, PlanReport] = {}
    candidates = [
        s
        for s in sorted(_user_statements(window, texts), key=lambda s: -s.total_exec_ms)
        if db_time and s.total_exec_ms / db_time >= th.min_share
    ][: th.top_statements]
    version = data.snapshots[-1].server_version_num if data.snapshots else None
    for s in candidates:
        text = texts[s.queryid].query if s.queryid in texts else None
        plans[s.queryid] = plan_report(
            conn,
            s.queryid,
            text,
            jsonlog=jsonlog,
            stale_tables=stale,
            server_version_num=version,
        )
    findings = analyze_window(
        window,
        texts,
        data.samples,
        health=report_health,
        plans=plans,
        request_counts=request_counts,
        thresholds=th,
    )
    version_text = server_info(conn).version
    notes = list(data.notes)
    if jsonlog is None:
        notes.append(
            "auto_explain plans not read (jsonlog not readable from here): plans are generic"
        )
    return DbReport(
        dsn=dsn_redacted,
        server_version=version_text,
        window=window,
        texts=texts,
        waits=summarize_waits(data.samples),
        health=report_health,
        plans=plans,
        findings=tuple(findings),
        notes=tuple(notes),
    )


# ---------------------------------------------------------------- pure analysis


def analyze_window(
    window: StatementWindow,
    texts: Mapping[int, StatementText],
    samples: Sequence[ActivitySample] = (),
    *,
    health: HealthReport | None = None,
    plans: Mapping[int, PlanReport] | None = None,
    request_counts: Mapping[str, int] | None = None,
    thresholds: DbThresholds | None = None,
) -> list[Finding]:
    """Ranked findings for one window (pure: no database access)."""
    th = thresholds or DbThresholds()
    plans = plans or {}
    statements = _user_statements(window, texts)
    db_time = _db_time(window, texts)
    findings: list[Finding] = []
    explained: set[int] = set()

    for s in sorted(statements, key=lambda s: -s.total_exec_ms):
        share = s.total_exec_ms / db_time if db_time else 0.0
        report = plans.get(s.queryid)
        specific = _plan_findings(s, share, report, texts, window) if report else []
        spill = _temp_spill_finding(s, share, report, texts, window)
        if spill:
            specific.append(spill)
        findings.extend(specific)
        if specific:
            explained.add(s.queryid)
        elif s.mean_exec_ms >= th.slow_mean_ms and s.calls >= th.slow_min_calls and db_time:
            findings.append(_slow_query(s, share, report, texts, window))

    findings.extend(_n_plus_one(statements, db_time, texts, window, request_counts, th))
    findings.extend(_activity_findings(samples, texts, th))
    if health is not None:
        findings.extend(_health_findings(health, statements, db_time, findings))
    return rank(findings)


def _evidence(s: StatementCounters, share: float, window: StatementWindow) -> dict[str, Any]:
    return {
        "calls": s.calls,
        "calls_per_s": s.calls / window.seconds,
        "total_ms": round(s.total_exec_ms, 3),
        "mean_ms": round(s.mean_exec_ms, 3),
        "rows_per_call": round(s.rows_per_call, 2),
        "share_of_db_time": round(share, 4),
        "shared_blks_read": s.shared_blks_read,
        "temp_blks_written": s.temp_blks_written,
        "window_s": round(window.seconds, 3),
    }


def _location(s: StatementCounters, texts: Mapping[int, StatementText]) -> Location:
    text = _text(texts, s.queryid)
    return Location(queryid=s.queryid, sql=one_line(text, 400) if text else None)


def _short(texts: Mapping[int, StatementText], queryid: int) -> str:
    text = _text(texts, queryid)
    return one_line(text, 60) if text else f"queryid {queryid}"


def _plan_findings(
    s: StatementCounters,
    share: float,
    report: PlanReport,
    texts: Mapping[int, StatementText],
    window: StatementWindow,
) -> list[Finding]:
    out: list[Finding] = []
    ev = _evidence(s, share, window)
    indexed_nodes = set()
    for idx in report.indexes:
        indexed_nodes.add(idx.node_id)
        score = 100 * share * idx.saving_fraction
        cols = ", ".join(idx.columns)
        out.append(
            Finding(
                kind="missing_index",
                title=f"Missing index on {idx.table} ({cols}) for: {_short(texts, s.queryid)}",
                score=score,
                score_explanation=(
                    f"the statement took {share:.1%} of database time in the window; the index "
                    f"could save {idx.saving_fraction:.0%} of it ({idx.basis})"
                ),
                recommendation=idx.statement,
                location=_location(s, texts),
                evidence={
                    **ev,
                    "table": idx.table,
                    "columns": list(idx.columns),
                    "filter_keeps": round(idx.selectivity, 5),
                    "rows_read_per_scan": idx.rows_read,
                    "verified_with_hypopg": idx.verified,
                    "cost_before": idx.cost_before,
                    "cost_after": idx.cost_after,
                    "plan_source": report.plan.source if report.plan else None,
                },
                source=SOURCE,
            )
        )
    # the index suggestion already covers what the scan's own tips would say
    tips = [
        t
        for t in report.tips
        if not (t.kind in ("filter", "hot_node") and t.node_id in indexed_nodes)
    ]
    tips = [t for t in tips if t.saving_fraction >= 0.05]
    if tips:
        top = tips[:3]
        saving = min(sum(t.saving_fraction for t in top), 0.9)
        out.append(
            Finding(
                kind="plan_issue",
                title=f"{top[0].message[:80]} in: {_short(texts, s.queryid)}",
                score=100 * share * saving,
                score_explanation=(
                    f"the statement took {share:.1%} of database time; its plan tips could save "
                    f"{saving:.0%} of it (" + "; ".join(t.basis for t in top) + ")"
                ),
                recommendation="; ".join(f"{t.node}: {t.advice}" for t in top),
                location=_location(s, texts),
                evidence={
                    **ev,
                    "plan_source": report.plan.source if report.plan else None,
                    "tips": [t.to_json() for t in top],
                },
                source=SOURCE,
            )
        )
    return out


def _temp_spill_finding(
    s: StatementCounters,
    share: float,
    report: PlanReport | None,
    texts: Mapping[int, StatementText],
    window: StatementWindow,
) -> Finding | None:
    if s.temp_blks_written <= 0:
        return None
    if report and any(t.kind in ("sort_spill", "hash_spill") for t in report.tips):
        return None  # the plan already says it
    per_call_kb = s.temp_blks_written * 8 / s.calls
    return Finding(
        kind="plan_issue",
        title=f"Spills to disk ({per_call_kb:,.0f} kB temp/call) in: {_short(texts, s.queryid)}",
        score=100 * share * 0.3,
        score_explanation=(
            f"the statement took {share:.1%} of database time and wrote temporary files "
            "(sorts or hashes larger than work_mem); assumed: keeping them in memory saves 30%"
        ),
        recommendation=(
            f"raise work_mem for this query above ~{max(per_call_kb * 2, 4096) / 1024:,.0f} MB "
            "(SET LOCAL work_mem), or avoid the big sort/hash (an index providing the order, "
            "fewer rows)"
        ),
        location=_location(s, texts),
        evidence={**_evidence(s, share, window), "temp_kb_per_call": round(per_call_kb, 1)},
        source=SOURCE,
    )


def _slow_query(
    s: StatementCounters,
    share: float,
    report: PlanReport | None,
    texts: Mapping[int, StatementText],
    window: StatementWindow,
) -> Finding:
    note = report.note if report else "no plan looked at (below the plan threshold)"
    return Finding(
        kind="slow_query",
        title=f"Slow statement ({s.mean_exec_ms:,.1f} ms mean, {s.calls} calls): "
        f"{_short(texts, s.queryid)}",
        score=100 * share * 0.5,
        score_explanation=(
            f"the statement took {share:.1%} of database time in the window; with no specific "
            "plan problem found, half of it is assumed recoverable"
        ),
        recommendation=(
            f"archon-diag explain --queryid {s.queryid} (add --analyze with literal values) to "
            "see where the time goes"
        ),
        location=_location(s, texts),
        evidence={**_evidence(s, share, window), "plan": note},
        source=SOURCE,
    )


def _is_read(text: str) -> bool:
    """A SELECT (or a WITH ... SELECT), ignoring leading comments.

    >>> _is_read("/* x */ SELECT 1"), _is_read("COMMIT"), _is_read("with a as (select 1) select *")
    (True, False, True)
    """
    body = text
    while True:
        body = body.lstrip()
        if body.startswith("/*") and "*/" in body:
            body = body.split("*/", 1)[1]
        elif body.startswith("--"):
            body = body.split("\n", 1)[1] if "\n" in body else ""
        else:
            break
    word = body.split(None, 1)[0].upper() if body.split() else ""
    return word in ("SELECT", "WITH", "VALUES", "TABLE")


def _n_plus_one(
    statements: Iterable[StatementCounters],
    db_time: float,
    texts: Mapping[int, StatementText],
    window: StatementWindow,
    request_counts: Mapping[str, int] | None,
    th: DbThresholds,
) -> list[Finding]:
    out: list[Finding] = []
    counts = {k: int(v) for k, v in (request_counts or {}).items() if int(v) > 0}
    total_requests = sum(counts.values())
    for s in statements:
        if s.mean_exec_ms > th.n_plus_one_max_mean_ms or s.rows_per_call > th.n_plus_one_max_rows:
            continue
        text = texts[s.queryid].query if s.queryid in texts else ""
        if not _is_read(text):
            continue  # N+1 is a query repeated per parent row: not BEGIN/COMMIT/UPDATE/SET
        share = s.total_exec_ms / db_time if db_time else 0.0
        ev = _evidence(s, share, window)
        location = Location(queryid=s.queryid, sql=_location(s, texts).sql)
        if counts:
            per_endpoint = {e: s.calls / r for e, r in counts.items()}
            candidates = {e: k for e, k in per_endpoint.items() if k >= th.n_plus_one_per_request}
            if not candidates:
                continue
            ev |= {
                "calls_per_request_if_from": {e: round(k, 2) for e, k in candidates.items()},
                "requests_in_window": total_requests,
            }
            # the busiest endpoint that would have to run it >= N times per request (a
            # statement's call site, once caught, names the real one: ``n_plus_one_at``)
            endpoint = max(candidates, key=lambda e: counts[e])
            out.append(_n_plus_one_finding(_short(texts, s.queryid), location, ev, endpoint, th))
        else:
            rate = s.calls / window.seconds
            if rate < th.n_plus_one_calls_per_s:
                continue
            out.append(_n_plus_one_finding(_short(texts, s.queryid), location, ev, None, th))
    return out


def _n_plus_one_finding(
    short: str,
    location: Location,
    ev: Mapping[str, Any],
    endpoint: str | None,
    th: DbThresholds | None = None,
) -> Finding:
    share = float(ev["share_of_db_time"])
    if endpoint is not None:
        per_request = float(ev["calls_per_request_if_from"][endpoint])
        requests = round(ev["calls"] / per_request) if per_request else 0
        basis = f"{ev['calls']} calls against {requests} requests of {endpoint} in the window"
        title_where = f"{per_request:,.1f}x per request of {endpoint}"
        ev = {**ev, "endpoint": endpoint, "calls_per_request": per_request}
    else:
        per_request = (th or DbThresholds()).n_plus_one_per_request  # assumed
        rate = float(ev["calls_per_s"])
        basis = f"{rate:,.0f} calls/s of a cheap statement (no request counts: call rate only)"
        title_where = f"{rate:,.0f} calls/s"
    recover = 1 - 1 / per_request
    return Finding(
        kind="n_plus_one",
        title=f"N+1 pattern ({title_where}): {short}",
        score=100 * share * recover,
        score_explanation=(
            f"the statement took {share:.1%} of database time; fetching the rows in one "
            f"query per request could save {recover:.0%} of it ({basis}); the round "
            "trips saved in the application are not counted"
        ),
        recommendation=(
            "batch the lookups: one query with WHERE key = ANY($1) (or a JOIN) per "
            "request instead of one query per item"
        ),
        location=dataclasses.replace(location, endpoint=endpoint),
        evidence=ev,
        source=SOURCE,
    )


def n_plus_one_at(f: Finding, endpoint: str) -> Finding:
    """The same N+1 finding placed on ``endpoint`` -- the one its call site's route
    handler names -- with its figures recomputed for that endpoint's requests. Unchanged
    when that endpoint could not have run the statement often enough per request."""
    if f.kind != "n_plus_one" or f.location.endpoint == endpoint:
        return f
    if endpoint not in (f.evidence.get("calls_per_request_if_from") or {}):
        return f
    short = one_line(f.location.sql, 60) if f.location.sql else f"queryid {f.location.queryid}"
    placed = _n_plus_one_finding(short, f.location, f.evidence, endpoint)
    return dataclasses.replace(placed, evidence={**f.evidence, **placed.evidence})


def _root_blocker(pid: int, graph: Mapping[int, tuple[int, ...]]) -> int:
    seen = {pid}
    while graph.get(pid):
        nxt = graph[pid][0]
        if nxt in seen:
            break
        seen.add(nxt)
        pid = nxt
    return pid


def _activity_findings(
    samples: Sequence[ActivitySample],
    texts: Mapping[int, StatementText],
    th: DbThresholds,
) -> list[Finding]:
    if not samples:
        return []
    out: list[Finding] = []
    summary = summarize_waits(samples)
    active = summary.active_samples
    # --- lock contention: blocking chains, grouped by root blocker
    lock_samples = 0
    chains: dict[tuple[int, int | None], dict[str, Any]] = {}
    for sample in samples:
        by_pid = {s.pid: s for s in sample.sessions}
        graph = {s.pid: s.blockers for s in sample.sessions if s.blockers}
        for s in sample.sessions:
            if not (s.active and s.wait_event_type == "Lock"):
                continue
            lock_samples += 1
            root = _root_blocker(s.pid, graph) if s.blockers else None
            root_row = by_pid.get(root) if root is not None else None
            key = (root or 0, s.query_id)
            chain = chains.setdefault(
                key,
                {
                    "blocker_pid": root,
                    "blocker_state": root_row.state if root_row else None,
                    "blocker_query": root_row.query if root_row else None,
                    "blocker_xact_age_s": 0.0,
                    "blocked_queryid": s.query_id,
                    "blocked_query": s.query,
                    "wait_event": s.wait_event,
                    "blocked_pids": set(),
                    "samples": 0,
                    "longest_wait_s": 0.0,
                },
            )
            chain["samples"] += 1
            chain["blocked_pids"].add(s.pid)
            chain["longest_wait_s"] = max(chain["longest_wait_s"], s.state_age_s or 0.0)
            if root_row and root_row.xact_age_s:
                chain["blocker_xact_age_s"] = max(chain["blocker_xact_age_s"], root_row.xact_age_s)
    if active and lock_samples and lock_samples / active >= th.lock_min_share:
        share = lock_samples / active
        ordered = sorted(chains.values(), key=lambda c: -c["samples"])
        for c in ordered:
            c["blocked_pids"] = sorted(c["blocked_pids"])
        first = ordered[0]
        idle_root = (first["blocker_state"] or "").startswith("idle in transaction")
        blocker = (
            f"pid {first['blocker_pid']} ({first['blocker_state']})"
            if first["blocker_pid"]
            else "an unseen session"
        )
        out.append(
            Finding(
                kind="lock_contention",
                title=f"Lock waits: {share:.0%} of active session time, blocked by {blocker}",
                score=100 * share,
                score_explanation=(
                    f"{lock_samples} of {active} active-session samples were waiting on a lock "
                    "(active session history); removing the blocking frees that time"
                ),
                recommendation=(
                    "the blocker holds its transaction open while idle: commit or roll back "
                    "promptly, set idle_in_transaction_session_timeout"
                    if idle_root
                    else "keep transactions that update these rows short; update rows in a "
                    "consistent order; consider SELECT ... FOR UPDATE SKIP LOCKED for queues"
                ),
                location=Location(
                    queryid=first["blocked_queryid"],
                    sql=_text(texts, first["blocked_queryid"])
                    if first["blocked_queryid"]
                    else None,
                ),
                evidence={
                    "lock_wait_samples": lock_samples,
                    "active_samples": active,
                    "chains": ordered[:5],
                    "top_waits": [{"wait": k, "samples": v} for k, v in summary.by_wait[:5]],
                },
                source=SOURCE,
            )
        )
    # --- idle in transaction
    idle: dict[int, dict[str, Any]] = {}
    roots = {c["blocker_pid"] for c in chains.values() if c["blocker_pid"]}
    for sample in samples:
        for s in sample.sessions:
            if (s.state or "").startswith("idle in transaction") and (
                s.state_age_s or 0
            ) >= th.idle_in_tx_s:
                entry = idle.setdefault(
                    s.pid,
                    {
                        "pid": s.pid,
                        "application_name": s.application_name,
                        "client": f"{s.client_addr}:{s.client_port}" if s.client_addr else None,
                        "last_query": s.query,
                        "max_idle_s": 0.0,
                        "xact_age_s": 0.0,
                    },
                )
                entry["max_idle_s"] = max(entry["max_idle_s"], s.state_age_s or 0.0)
                entry["xact_age_s"] = max(entry["xact_age_s"], s.xact_age_s or 0.0)
    for pid, entry in sorted(idle.items(), key=lambda kv: -kv[1]["max_idle_s"]):
        blocks = pid in roots
        blocked = sum(c["samples"] for c in chains.values() if c["blocker_pid"] == pid)
        score = 100 * blocked / active if blocks and active else 1.0
        out.append(
            Finding(
                kind="idle_in_transaction",
                title=f"Session pid {pid} idle in transaction for {entry['max_idle_s']:.0f} s"
                + (" and blocking others" if blocks else ""),
                score=score,
                score_explanation=(
                    f"{blocked} active-session samples waited on locks it holds"
                    if blocks
                    else "no measured waits on it; it holds a connection and a snapshot "
                    "(vacuum cannot clean behind it): a fixed 1 point"
                ),
                recommendation=(
                    "find the code path that opens a transaction and waits (on I/O, a remote "
                    "call, the user) before committing; set idle_in_transaction_session_timeout"
                ),
                location=Location(
                    process=f"{entry['application_name'] or 'client'} (pg pid {pid})"
                ),
                evidence={**entry, "blocking": blocks},
                source=SOURCE,
            )
        )
    # --- connections near max_connections
    usable = [(s.connections, max(s.max_connections - s.reserved_connections, 1)) for s in samples]
    near = sum(1 for c, m in usable if c >= th.connections_near_max * m)
    if near:
        share = near / len(samples)
        peak, limit = max(usable)
        out.append(
            Finding(
                kind="pool_starvation",
                title=f"Connections near the limit: peak {peak} of {limit} usable",
                score=100 * share * 0.5,
                score_explanation=(
                    f"in {share:.0%} of samples connections were >= "
                    f"{th.connections_near_max:.0%} of max_connections; new connections fail "
                    "or queue there: half that time assumed recoverable"
                ),
                recommendation=(
                    "put a pooler in front (PgBouncer, transaction mode) or shrink the "
                    "application pools; close idle sessions"
                ),
                evidence={
                    "samples_near_max": near,
                    "samples": len(samples),
                    "peak_connections": peak,
                    "usable_connections": limit,
                },
                source=SOURCE,
            )
        )
    return out


def _health_findings(
    report: HealthReport,
    statements: Sequence[StatementCounters],
    db_time: float,
    findings: Sequence[Finding],
) -> list[Finding]:
    out: list[Finding] = []
    indexed_tables = {
        str(f.evidence.get("table", "")).split(".")[-1]
        for f in findings
        if f.kind == "missing_index"
    }
    seq = [t for t in report.seq_scan_tables if t.relname not in indexed_tables]
    if seq:
        out.append(
            Finding(
                kind="db_health",
                title=f"{len(seq)} table(s) read mostly by sequential scans: "
                + ", ".join(t.relname for t in seq[:5]),
                score=0.5,
                score_explanation="a cumulative statistic, not time in this window: a fixed 0.5",
                recommendation="archon-diag explain the statements that read them; index the "
                "filtered columns",
                evidence={
                    "tables": [
                        {
                            "table": f"{t.schemaname}.{t.relname}",
                            "seq_scan": t.seq_scan,
                            "idx_scan": t.idx_scan,
                            "index_share": round(t.index_share, 3),
                            "live_rows": t.n_live_tup,
                            "rows_read_by_seq_scans": t.seq_tup_read,
                        }
                        for t in seq
                    ]
                },
                source=SOURCE,
            )
        )
    if report.unused_indexes:
        total = sum(i.index_bytes for i in report.unused_indexes)
        out.append(
            Finding(
                kind="db_health",
                title=f"{len(report.unused_indexes)} unused index(es), {total / 1048576:,.1f} MiB",
                score=0.2,
                score_explanation="writes and space, not read time: a fixed 0.2",
                recommendation="drop indexes with no scans since the statistics reset (check "
                "replicas and rare jobs first): DROP INDEX CONCURRENTLY ...",
                evidence={"indexes": [vars(i) for i in report.unused_indexes]},
                source=SOURCE,
            )
        )
    if report.duplicate_indexes:
        out.append(
            Finding(
                kind="db_health",
                title=f"{len(report.duplicate_indexes)} set(s) of duplicate indexes",
                score=0.3,
                score_explanation="writes and space, not read time: a fixed 0.3",
                recommendation="keep one index of each set; DROP INDEX CONCURRENTLY the others",
                evidence={
                    "sets": [
                        {"table": f"{d.schemaname}.{d.relname}", "indexes": list(d.indexes)}
                        for d in report.duplicate_indexes
                    ]
                },
                source=SOURCE,
            )
        )
    hit = report.cache_hit
    io_ms = sum(s.blk_read_ms for s in statements)
    if hit and hit.heap_ratio is not None and hit.heap_ratio < 0.99 and hit.heap_blocks > 10_000:
        share = io_ms / db_time if db_time else 0.0
        out.append(
            Finding(
                kind="db_health",
                title=f"Cache hit ratio {hit.heap_ratio:.1%} (tables), "
                f"{(hit.index_ratio or 1):.1%} (indexes)",
                score=100 * share * 0.5,
                score_explanation=(
                    f"statements spent {share:.1%} of database time reading blocks "
                    "(track_io_timing); half assumed recoverable by a larger cache or fewer reads"
                ),
                recommendation="raise shared_buffers (and the machine's memory), or read less: "
                "indexes, fewer columns, archiving cold rows",
                evidence={"cache_hit": vars(hit), "block_read_ms_in_window": io_ms},
                source=SOURCE,
            )
        )
    if report.stale_tables:
        out.append(
            Finding(
                kind="db_health",
                title=f"{len(report.stale_tables)} table(s) with stale statistics or many dead "
                "rows: " + ", ".join(t.relname for t in report.stale_tables[:5]),
                score=0.5,
                score_explanation="bad estimates make bad plans, but this is not measured time: "
                "a fixed 0.5",
                recommendation="ANALYZE (and VACUUM) these tables; tune autovacuum thresholds "
                "for large tables",
                evidence={"tables": [vars(t) for t in report.stale_tables]},
                source=SOURCE,
            )
        )
    for q in report.long_queries:
        out.append(
            Finding(
                kind="db_health",
                title=f"Query running for {q.query_age_s:,.0f} s (pid {q.pid})",
                score=1.0,
                score_explanation="running now, outside the statements' window totals: "
                "a fixed 1 point",
                recommendation="archon-diag explain --sql with its text, or "
                "pg_cancel_backend() it if it is runaway",
                location=Location(sql=q.query, process=f"{q.application_name} (pg pid {q.pid})"),
                evidence=vars(q),
                source=SOURCE,
            )
        )
    return out


def waits_by_query(samples: Sequence[ActivitySample]) -> dict[int, Counter[str]]:
    """query_id -> wait counter (for per-statement wait breakdowns)."""
    out: dict[int, Counter[str]] = defaultdict(Counter)
    for sample in samples:
        for s in sample.sessions:
            if s.active and s.query_id:
                out[s.query_id][
                    f"{s.wait_event_type}:{s.wait_event}" if s.wait_event_type else "CPU"
                ] += 1
    return dict(out)
