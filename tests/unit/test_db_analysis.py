"""Statement deltas, literal redaction and the pure window analysis (no server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diag.dbanalysis import PlanReport, analyze_window, summarize_waits
from diag.findings import KINDS
from diag.plans import parse_plan
from diag.plantips import tips_for
from probes.postgres import (
    ActivitySample,
    SessionRow,
    StatementCounters,
    StatementSnapshot,
    StatementText,
    diff,
    timeline,
)
from probes.postgres.sqltext import placeholders, redact_literals

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "db"


def _c(queryid: int, calls: int, ms: float, **kw: int | float | bool) -> StatementCounters:
    base = {
        "userid": 10,
        "dbid": 5,
        "queryid": queryid,
        "toplevel": True,
        "calls": calls,
        "total_exec_ms": ms,
        "total_plan_ms": 0.0,
        "rows": calls,
        "shared_blks_hit": 0,
        "shared_blks_read": 0,
        "shared_blks_dirtied": 0,
        "shared_blks_written": 0,
        "temp_blks_read": 0,
        "temp_blks_written": 0,
        "blk_read_ms": 0.0,
        "blk_write_ms": 0.0,
    }
    base.update(kw)
    return StatementCounters(**base)  # type: ignore[arg-type]


def _snap(t: float, *stmts: StatementCounters, dealloc: int | None = 0) -> StatementSnapshot:
    return StatementSnapshot(t, 1.0, 150018, "1.10", stmts, dealloc=dealloc, stats_reset=1.0)


def test_diff_per_key_new_unchanged_and_reset() -> None:
    a = _snap(100.0, _c(1, 10, 100.0), _c(2, 5, 50.0), _c(3, 100, 1000.0))
    b = _snap(110.0, _c(1, 30, 400.0), _c(2, 5, 50.0), _c(3, 4, 8.0), _c(4, 2, 2.0))
    window = diff(a, b)
    got = {s.queryid: s for s in window.statements}
    assert set(got) == {1, 3, 4}  # 2 did not run
    assert got[1].calls == 20 and got[1].total_exec_ms == 300.0
    assert got[1].mean_exec_ms == 15.0
    assert got[3].calls == 4  # counters went down: reset, count what ran since
    assert got[4].calls == 2
    assert window.reset_seen and window.seconds == 10.0
    assert window.db_time_ms == 310.0
    assert [s.queryid for s in window.top("total_exec_ms", 2)] == [1, 3]


def test_snapshot_json_round_trip_and_timeline() -> None:
    snaps = [_snap(t, _c(1, int(t), t * 10)) for t in (10.0, 12.0, 14.0)]
    again = StatementSnapshot.from_json(json.loads(json.dumps(snaps[1].to_json())))
    assert again == snaps[1]
    points = timeline(snaps)
    assert len(points) == 2 and points[0].calls_per_s == 1.0
    assert points[0].db_time_ms_per_s == 10.0 and points[0].top_queryid == 1


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("UPDATE t SET secret = 'hunter2' WHERE id = 42", "UPDATE t SET secret = $? WHERE id = $?"),
        ("select $$dollar secret$$, $1", "select $?, $1"),
        ("select * from t where a = 'cut off at the en", "select * from t where a = $?"),
        ("select 1.5e3, x'ff'", "select $?, x$?"),  # the prefix stays, the value goes
    ],
)
def test_redact_literals(raw: str, expected: str) -> None:
    assert redact_literals(raw) == expected


def test_placeholders_ignores_strings() -> None:
    assert placeholders("select '$9' , $2") == 2


def _sample(t: float, *sessions: SessionRow, max_conn: int = 100) -> ActivitySample:
    return ActivitySample(t, 0.3, max_conn, 3, sessions)


def _s(
    pid: int, state: str, wait: tuple[str | None, str | None] = (None, None), **kw: object
) -> SessionRow:
    base: dict[str, object] = {
        "pid": pid,
        "datname": "db",
        "usename": "app",
        "application_name": "app",
        "client_addr": "127.0.0.1",
        "client_port": 5000 + pid,
        "state": state,
        "wait_event_type": wait[0],
        "wait_event": wait[1],
        "query_id": None,
        "xact_age_s": None,
        "query_age_s": None,
        "state_age_s": None,
        "query": None,
    }
    base.update(kw)
    return SessionRow(**base)  # type: ignore[arg-type]


def test_lock_chain_and_idle_in_transaction_findings() -> None:
    samples = []
    for i in range(20):
        blocker = _s(
            1,
            "idle in transaction",
            ("Client", "ClientRead"),
            state_age_s=6.0 + i,
            xact_age_s=7.0 + i,
            query="UPDATE projects SET name = $? WHERE id = $?",
        )
        waiting = _s(
            2,
            "active",
            ("Lock", "transactionid"),
            query_id=77,
            blockers=(1,),
            state_age_s=float(i),
            query="UPDATE projects SET name = $? WHERE id = $?",
        )
        busy = _s(3, "active", query_id=88)
        samples.append(_sample(100 + i * 0.2, blocker, waiting, busy))
    texts = {77: StatementText(77, "UPDATE projects SET name = $1 WHERE id = $2", False)}
    window = diff(_snap(100.0), _snap(104.0, _c(77, 1, 4000.0), _c(88, 400, 4000.0)))
    findings = analyze_window(window, texts, samples)
    kinds = [f.kind for f in findings]
    assert "lock_contention" in kinds and "idle_in_transaction" in kinds
    lock = next(f for f in findings if f.kind == "lock_contention")
    assert lock.score == pytest.approx(50.0)  # 20 of 40 active-session samples waited
    assert lock.evidence["chains"][0]["blocker_pid"] == 1
    assert lock.evidence["chains"][0]["blocker_state"] == "idle in transaction"
    assert "idle_in_transaction_session_timeout" in lock.recommendation
    idle = next(f for f in findings if f.kind == "idle_in_transaction")
    assert idle.evidence["blocking"] is True and idle.score == pytest.approx(50.0)
    assert all(f.kind in KINDS for f in findings)


def test_waits_summary() -> None:
    samples = [
        _sample(1.0, _s(1, "active", ("IO", "DataFileRead"), query_id=5), _s(2, "idle")),
        _sample(1.2, _s(1, "active", query_id=5)),
    ]
    summary = summarize_waits(samples)
    assert summary.active_samples == 2 and dict(summary.by_wait) == {"IO:DataFileRead": 1, "CPU": 1}
    assert summary.peak_connections == 3 and summary.interval_s == pytest.approx(0.2)


def test_pool_starvation_near_max_connections() -> None:
    sessions = tuple(_s(i, "idle") for i in range(1, 9))
    samples = [_sample(1.0 + i, *sessions, max_conn=12) for i in range(4)]
    findings = analyze_window(diff(_snap(0.0), _snap(4.0)), {}, samples)
    assert [f.kind for f in findings] == ["pool_starvation"]
    assert findings[0].evidence["peak_connections"] == 9


def test_n_plus_one_with_request_counts_and_by_call_rate() -> None:
    texts = {
        1: StatementText(1, "SELECT * FROM projects WHERE id = $1", False),
        2: StatementText(2, "SELECT * FROM tasks WHERE project_id = $1", False),
        3: StatementText(3, "-- archon-diag: statements", True),
    }
    window = diff(
        _snap(0.0),
        _snap(10.0, _c(1, 2000, 400.0), _c(2, 100, 2000.0), _c(3, 50, 5000.0)),
    )
    counts = {"GET /api/projects": 100, "GET /api/health": 400}
    findings = analyze_window(window, texts, request_counts=counts)
    n1 = [f for f in findings if f.kind == "n_plus_one"]
    assert len(n1) == 1 and n1[0].location.queryid == 1
    assert n1[0].location.endpoint == "GET /api/health"  # busiest endpoint explaining >= 5/req
    assert n1[0].evidence["calls_per_request_if_from"]["GET /api/projects"] == 20.0
    # db time excludes archon-diag's own statement: 400 / 2400
    assert n1[0].evidence["share_of_db_time"] == pytest.approx(400 / 2400, abs=1e-4)
    # no request counts: call rate (200/s) is enough to suspect it
    by_rate = [f for f in analyze_window(window, texts) if f.kind == "n_plus_one"]
    assert [f.location.queryid for f in by_rate] == [1] and by_rate[0].location.endpoint is None


def test_slow_query_and_plan_findings_scored_by_share() -> None:
    texts = {
        1: StatementText(1, "SELECT * FROM tasks WHERE project_id = $1 AND status = $2", False),
        2: StatementText(
            2, "SELECT id, title FROM tasks ORDER BY title, id LIMIT $1 OFFSET $2", False
        ),
        3: StatementText(3, "SELECT pg_sleep($1)", False),
    }
    window = diff(
        _snap(0.0),
        _snap(10.0, _c(1, 50, 2500.0), _c(2, 10, 3600.0, temp_blks_written=6000), _c(3, 30, 300.0)),
    )
    sort_plan = parse_plan(
        json.loads((FIXTURES / "plan_sort_spill.json").read_text()), source="analyze"
    )
    plans = {2: PlanReport(2, sort_plan, tuple(tips_for(sort_plan)))}
    findings = analyze_window(window, texts, plans=plans)
    by_q = {f.location.queryid: f for f in findings}
    assert by_q[2].kind == "plan_issue" and "sort_spill" in json.dumps(by_q[2].evidence)
    assert by_q[2].score <= 100 * 3600 / 6400
    assert by_q[1].kind == "slow_query"  # 50 ms mean, no plan
    assert by_q[1].score == pytest.approx(100 * 2500 / 6400 * 0.5)
    assert 3 not in by_q  # 10 ms mean: below the 20 ms slow threshold
    assert findings == sorted(findings, key=lambda f: -f.score)


def test_temp_spill_without_plan_is_a_plan_issue() -> None:
    texts = {5: StatementText(5, "SELECT a FROM big ORDER BY a", False)}
    window = diff(_snap(0.0), _snap(10.0, _c(5, 4, 80.0, temp_blks_written=400)))
    findings = analyze_window(window, texts)
    assert [f.kind for f in findings] == ["plan_issue"]
    assert "work_mem" in findings[0].recommendation
