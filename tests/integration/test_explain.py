"""``archon-diag explain`` on the embedded PostgreSQL 15: generic plans for ``$n`` text
(with a parameter the text never uses), EXPLAIN ANALYZE refused for anything but a single
SELECT (and the data unchanged after), allowed for a SELECT inside a read-only rolled-back
transaction, and auto_explain plans joined by query_id."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import psycopg
import pytest

from diag import cli, pgembed, plans
from diag.plans import analyze_plan, generic_plan
from probes import pgconn
from tests.integration.db_workload import WorkDb, create_workdb, drop_workdb


@pytest.fixture(scope="module")
def workdb(pg_dsn: str) -> Iterator[WorkDb]:
    db = create_workdb(pg_dsn, "diag_explain")
    try:
        yield db
    finally:
        drop_workdb(db)


@pytest.fixture
def only_db_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    keep = {k: v for k, v in cli.COMMANDS.items() if k in ("db", "explain")}
    monkeypatch.setattr(cli, "COMMANDS", keep)


def _queryid(dsn: str, like: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT queryid FROM pg_stat_statements WHERE query LIKE %s "
            "AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "ORDER BY calls DESC LIMIT 1",
            (like,),
        ).fetchone()
    assert row is not None, f"no statement like {like!r}"
    return int(row[0])


def _state(dsn: str) -> tuple[int, int, int, bool]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        count = conn.execute("SELECT count(*), sum(n) FROM victims").fetchone()
        seq = conn.execute("SELECT last_value, is_called FROM victims_id_seq").fetchone()
    assert count is not None and seq is not None
    return int(count[0]), int(count[1]), int(seq[0]), bool(seq[1])


def test_generic_plan_for_pss_text_with_an_unused_parameter(
    workdb: WorkDb, only_db_commands: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # a client sending 3 typed parameters of which the text uses $1 and $3 only
    with psycopg.connect(workdb.dsn, autocommit=True) as conn:
        int8 = 20
        conn.pgconn.exec_params(
            b"SELECT * FROM tasks WHERE project_id = $1 AND $3::int IS NULL",
            [b"5", b"7", None],
            [int8, int8, int8],
        )
        conn.execute("SELECT title FROM tasks WHERE project_id = %s AND status = %s", (3, "todo"))
    qid = _queryid(workdb.dsn, "%$3::int IS NULL%")
    assert (
        cli.main(["explain", "--dsn", workdb.dsn, "--queryid", str(qid), "--format", "json"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["plan"]["source"] == "generic"
    assert any("$2" in note for note in out["plan"]["notes"])  # typed as text, then planned
    assert "Seq Scan" in json.dumps(out["plan"]["root"])

    # ordinary pg_stat_statements text with $n, in the terminal
    qid2 = _queryid(workdb.dsn, "SELECT title FROM tasks WHERE project_id = $1%")
    assert cli.main(["explain", "--dsn", workdb.dsn, "--queryid", str(qid2)]) == 0
    text = capsys.readouterr().out
    assert "plan (generic" in text and "todo" not in text
    assert "CREATE INDEX CONCURRENTLY" in text  # selective filter on a seq scan


def test_generic_plan_prepare_path_cleans_up(workdb: WorkDb) -> None:
    with pgconn.connect(workdb.dsn) as conn:
        plan = generic_plan(conn, "SELECT * FROM tasks WHERE status = $1 AND $2 IS NULL")
        assert plan.source == "generic" and not plan.has_actuals
        left = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
        assert left == (0,)
        assert conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


@pytest.mark.parametrize(
    "text",
    [
        "DELETE FROM victims",
        "UPDATE victims SET n = n + 1",
        "INSERT INTO victims (n) VALUES (99)",
        "SELECT 1; DROP TABLE victims",
        "WITH d AS (DELETE FROM victims RETURNING *) SELECT * FROM d",
        "SELECT nextval('victims_id_seq')",
        "SELECT * FROM victims FOR UPDATE",
    ],
)
def test_explain_analyze_refuses_and_changes_nothing(
    workdb: WorkDb, only_db_commands: None, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    before = _state(workdb.dsn)
    assert cli.main(["explain", "--dsn", workdb.dsn, "--sql", text, "--analyze"]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and len(err.strip().splitlines()) == 1
    assert _state(workdb.dsn) == before


def test_plain_explain_refuses_several_statements_and_ddl(
    workdb: WorkDb, only_db_commands: None, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _state(workdb.dsn)
    for text in ("SELECT 1; DROP TABLE victims", "DROP TABLE victims", "TRUNCATE victims"):
        assert cli.main(["explain", "--dsn", workdb.dsn, "--sql", text]) == 2
        assert "refused" in capsys.readouterr().err
    assert _state(workdb.dsn) == before


def test_explain_analyze_select_runs_read_only_and_is_rolled_back(
    workdb: WorkDb,
    only_db_commands: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = cli.main(
        [
            "explain",
            "--dsn",
            workdb.dsn,
            "--sql",
            "SELECT count(*) FROM tasks WHERE project_id = 3 AND status = 'doing'",
            "--analyze",
            "--format",
            "json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plan"]["source"] == "analyze" and out["plan"]["execution_ms"] > 0
    assert out["plan"]["root"]["actual_rows"] is not None
    assert "doing" not in json.dumps(out)  # the literal is redacted in the plan and query
    assert out["indexes"] and out["indexes"][0]["columns"][0] in ("project_id", "status")

    # prove the transaction layer on its own: let a writing function past the parser
    with psycopg.connect(workdb.dsn, autocommit=True) as admin:
        admin.execute(
            "CREATE OR REPLACE FUNCTION sneaky() RETURNS int LANGUAGE sql VOLATILE AS "
            "$$ INSERT INTO victims (n) VALUES (1000) RETURNING n $$"
        )
    before = _state(workdb.dsn)
    monkeypatch.setattr(plans, "check_analyzable", lambda text, volatility=None: None)
    with pgconn.connect(workdb.dsn) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            analyze_plan(conn, "SELECT sneaky()")
        assert conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        # and after a SELECT that did run, the session is back to autocommit, nothing open
        plan = analyze_plan(conn, "SELECT count(*) FROM victims")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert plan.has_actuals
    assert _state(workdb.dsn) == before
    monkeypatch.undo()
    with pgconn.connect(workdb.dsn) as conn, pytest.raises(plans.Refused, match="sneaky"):
        analyze_plan(conn, "SELECT sneaky()")  # and the real check refuses it
    assert _state(workdb.dsn) == before


def test_auto_explain_plan_joined_by_query_id(
    workdb: WorkDb,
    pg_cluster: pgembed.ClusterInfo,
    only_db_commands: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with psycopg.connect(workdb.dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT count(*), pg_sleep(0.12) FROM tasks WHERE status = 'review-7f3a'"
        ).fetchall()
    time.sleep(0.3)  # the logging collector writes the line
    qid = _queryid(workdb.dsn, "SELECT count(*), pg_sleep($1) FROM tasks WHERE status = $2%")
    reader = plans.JsonlogPlans(pg_cluster.jsonlog)
    reader.poll()
    logged = reader.plan_for(qid)
    assert logged is not None and logged.source == "auto_explain" and logged.duration_ms
    assert logged.duration_ms >= 100

    assert (
        cli.main(["explain", "--dsn", workdb.dsn, "--queryid", str(qid), "--format", "json"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["plan"]["source"] == "auto_explain" and out["plan"]["query_id"] == qid
    assert "review-7f3a" not in json.dumps(out)
