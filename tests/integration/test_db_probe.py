"""``archon-diag db`` and the PostgreSQL probes against real workloads in the embedded
cluster: a missing index, an N+1, a sort spilling to disk and a lock wait are found and
explained; a clean workload gets no index advice."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from diag import cli, pgembed
from diag.dbanalysis import diagnose
from diag.indexadvice import advise
from diag.plans import JsonlogPlans
from probes import pgconn
from probes.postgres import (
    ActivitySampler,
    Disabled,
    PgLink,
    StatementSampler,
    WindowCollector,
    health,
    optional,
)
from tests.integration.db_workload import (
    WorkDb,
    background,
    create_workdb,
    drop_workdb,
    lock_chain,
    missing_index_load,
    n_plus_one_load,
    sort_spill_load,
)

SECRET = "secret-literal-7f3a"


@pytest.fixture(scope="module")
def workdb(pg_dsn: str) -> Iterator[WorkDb]:
    db = create_workdb(pg_dsn, "diag_db")
    try:
        yield db
    finally:
        drop_workdb(db)


@pytest.fixture
def only_db_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the real ``cli.main`` with just this area's commands (others may be mid-change)."""
    keep = {k: v for k, v in cli.COMMANDS.items() if k in ("db", "explain")}
    monkeypatch.setattr(cli, "COMMANDS", keep)


def test_window_finds_missing_index_n_plus_one_spill_and_lock_wait(
    workdb: WorkDb, pg_cluster: pgembed.ClusterInfo
) -> None:
    requests, per_request = 60, 20
    collector = WindowCollector(workdb.dsn, sample_interval_s=0.1, snapshot_interval_s=1.0)
    collector.start()
    with background() as bg:
        bg.spawn(missing_index_load(workdb.dsn, 3.5))
        bg.spawn(n_plus_one_load(workdb.dsn, requests, per_request))
        bg.spawn(sort_spill_load(workdb.dsn, 3))
        bg.spawn(lock_chain(workdb.dsn, 2.0, SECRET))
        collector.run_for(4.0)
    time.sleep(0.3)  # the last auto_explain lines reach the log
    data = collector.stop()
    assert len(data.snapshots) >= 4 and len(data.samples) >= 20

    with pgconn.connect(workdb.dsn) as conn:
        report = diagnose(
            conn,
            data,
            jsonlog=JsonlogPlans(pg_cluster.jsonlog),
            request_counts={"GET /api/projects": requests, "GET /api/health": 2},
        )
    payload = json.dumps(report.to_json(), default=str)
    assert SECRET not in payload  # literals never reach the output
    by_kind: dict[str, list] = {}
    for f in report.findings:
        by_kind.setdefault(f.kind, []).append(f)

    # the missing index: a ready statement for tasks(project_id) that really works
    idx = [f for f in by_kind["missing_index"] if "tasks" in f.evidence["table"]]
    assert idx, [f.title for f in report.findings]
    missing = idx[0]
    assert missing.evidence["columns"] == ["project_id"]
    assert missing.recommendation.startswith("CREATE INDEX CONCURRENTLY")
    assert missing.score > 5 and "database time" in missing.score_explanation
    assert missing.evidence["verified_with_hypopg"] is (True if workdb.hypopg else None)

    # the N+1: ~20 cheap lookups per request of the endpoint
    n1 = by_kind["n_plus_one"][0]
    assert "projects" in (n1.location.sql or "")
    assert n1.location.endpoint == "GET /api/projects"
    assert n1.evidence["calls_per_request"] >= 15

    # the sort spilling to disk (from auto_explain's real plan or the temp-block counters)
    spills = [
        f
        for f in by_kind["plan_issue"]
        if "sort_spill" in json.dumps(f.evidence) or "Spills to disk" in f.title
    ]
    assert spills and "work_mem" in spills[0].recommendation

    # the lock wait: the chain names the idle-in-transaction blocker
    lock = by_kind["lock_contention"][0]
    chain = lock.evidence["chains"][0]
    assert chain["blocker_state"].startswith("idle in transaction")
    assert chain["blocked_pids"] and lock.score > 1

    # top lists and the waits summary are there
    data_json = report.to_json()
    assert data_json["top"]["temp_blks_written"]
    assert data_json["waits"]["by_wait"]
    assert report.waits.sample_cost_ms_p50 < 50

    # the suggestion runs, and afterwards the same workload gets no index advice
    with psycopg.connect(
        workdb.admin_dsn.rsplit("/", 1)[0] + "/" + workdb.name, autocommit=True
    ) as admin:
        admin.execute(missing.recommendation)
        plan = admin.execute(
            "EXPLAIN (FORMAT JSON) SELECT * FROM tasks WHERE project_id = 7"
        ).fetchone()
        assert plan is not None and "Index" in json.dumps(plan[0])
        try:
            clean = WindowCollector(workdb.dsn, sample_interval_s=0.2)
            clean.start()
            with background() as bg:
                bg.spawn(missing_index_load(workdb.dsn, 1.5))
                clean.run_for(1.5)
            with pgconn.connect(workdb.dsn) as conn:
                after = diagnose(conn, clean.stop(), with_health=False)
            assert not [f for f in after.findings if f.kind == "missing_index"]
            # a plan logged before the index existed gets no advice now: it is covered
            old_plan = report.plans[missing.location.queryid or 0].plan
            assert old_plan is not None
            with pgconn.connect(workdb.dsn) as conn:
                suggestions, skipped = advise(conn, old_plan)
            assert suggestions == []
            assert any("covered by index idx_tasks_project_id" in s.reason for s in skipped)
        finally:
            admin.execute("DROP INDEX IF EXISTS idx_tasks_project_id")


def test_blocking_chain_from_two_concurrent_sessions(workdb: WorkDb) -> None:
    sampler = ActivitySampler()
    with pgconn.connect(workdb.dsn) as conn, background() as bg:
        bg.spawn(lock_chain(workdb.dsn, 2.0, SECRET))
        found = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and found is None:
            sample = sampler.sample(conn)
            waiting = [s for s in sample.sessions if s.wait_event_type == "Lock"]
            if waiting:
                found = (sample, waiting[0])
            time.sleep(0.05)
        assert found is not None, "no lock wait seen"
        sample, waiter = found
        assert len(waiter.blockers) == 1
        holder = next(s for s in sample.sessions if s.pid == waiter.blockers[0])
        assert holder.state == "idle in transaction" and holder.xact_age_s is not None
        assert SECRET not in json.dumps(sample.to_json())
        # pg_blocking_pids is only asked for Lock waits
        assert all(not s.blockers for s in sample.sessions if s.wait_event_type != "Lock")
        assert sample.max_connections >= sample.connections


def test_db_command_json_clean_window_and_redacted_dsn(
    workdb: WorkDb, only_db_commands: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = workdb.dsn.replace("postgres@", "postgres:hunter2@")  # trust auth ignores it
    out = tmp_path / "db.json"
    with psycopg.connect(workdb.dsn, autocommit=True) as conn:
        for i in range(30):  # a clean workload: primary-key lookups
            conn.execute("SELECT name FROM projects WHERE id = %s", (i + 1,))
    code = cli.main(["db", "--dsn", dsn, "--window", "1s", "--format", "json", "-o", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["schema"] == "archon-diag.db/1"
    assert "hunter2" not in out.read_text() and "***" in report["dsn"]
    assert not [f for f in report["findings"] if f["kind"] == "missing_index"]
    assert report["waits"]["samples"] >= 3
    # window 0: counters since the last reset, terminal output
    assert cli.main(["db", "--dsn", dsn, "--window", "0", "--no-health"]) == 0
    text = capsys.readouterr().out
    assert "archon-diag db" in text and "hunter2" not in text


def test_db_without_pg_stat_statements_is_one_line_exit_3(
    pg_dsn: str, only_db_commands: None, capsys: pytest.CaptureFixture[str]
) -> None:
    name = "diag_db_no_pss"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    try:
        dsn = pg_dsn.rsplit("/", 1)[0] + "/" + name
        assert cli.main(["db", "--dsn", dsn, "--window", "1s"]) == 3
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "CREATE EXTENSION pg_stat_statements" in err
        assert "Traceback" not in err
    finally:
        # no FORCE: a session the command left behind would make this fail
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")


def test_failing_optional_check_is_disabled_with_a_hint(workdb: WorkDb, pg_dsn: str) -> None:
    with pgconn.connect(pg_dsn) as conn:  # the postgres database has no hypopg
        result = optional(conn, "hypothetical indexes", "hypopg_reset")
        assert isinstance(result, Disabled)
        assert result.hint.startswith("hypothetical indexes disabled:")
        assert "extension" in result.hint and "\n" not in result.hint
        # the connection goes on, and so do the other checks
        report = health(conn)
        assert report.cache_hit is not None and not report.disabled


def test_link_reconnects_after_the_backend_is_gone(workdb: WorkDb) -> None:
    link = PgLink(workdb.dsn)
    sampler = StatementSampler()
    first = link.call(sampler.snapshot)
    pid = link.conn.info.backend_pid
    with psycopg.connect(workdb.dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.2)
    second = link.call(sampler.snapshot)
    assert link.reconnects == 1 and link.conn.info.backend_pid != pid
    assert second.taken_at > first.taken_at
    link.close()
