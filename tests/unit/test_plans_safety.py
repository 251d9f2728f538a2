"""What may be planned and what may be executed, decided by PostgreSQL's parser (pglast)."""

from __future__ import annotations

import pytest

from diag.sqlsafety import Refused, check_analyzable, check_plannable


def _stable(names: list[str]) -> dict[str, set[str]]:
    volatile = {"random", "pg_terminate_backend", "my_writer"}
    return {n: {"v"} if n in volatile else {"s"} for n in names}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("DELETE FROM t", "DELETE is not run"),
        ("UPDATE t SET a = 1", "UPDATE is not run"),
        ("INSERT INTO t VALUES (1)", "INSERT is not run"),
        ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", "MERGE is not run"),
        ("SELECT 1; DROP TABLE t", "2 statements"),
        ("DROP TABLE t", "DROP is not run"),
        ("EXPLAIN ANALYZE DELETE FROM t", "EXPLAIN is not run"),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "data-modifying DELETE"),
        ("SELECT * FROM (WITH u AS (UPDATE t SET a=1 RETURNING 1) SELECT 1 FROM u) x", "UPDATE"),
        ("SELECT * FROM t FOR UPDATE", "FOR UPDATE/SHARE"),
        ("SELECT (SELECT a FROM t FOR SHARE)", "FOR UPDATE/SHARE"),
        ("SELECT * INTO new_t FROM t", "INTO"),
        ("SELECT * FROM t WHERE a = $1", "placeholders"),
        ("SELECT pg_terminate_backend(42)", "pg_terminate_backend"),
        ("SELECT nextval('s')", "nextval"),
        ("SELECT my_writer()", "my_writer"),
        ("SELEC 1", "not valid SQL"),
        ("   ", "empty"),
    ],
)
def test_analyze_refuses(text: str, reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        check_analyzable(text, _stable)


def test_analyze_accepts_plain_select_with_stable_functions() -> None:
    checked = check_analyzable(
        "SELECT count(*), now() FROM t WHERE a = 'x' AND random() < 0.5", _stable
    )
    assert checked.kind == "SELECT" and "count" in checked.functions


def test_without_a_volatility_lookup_unknown_functions_are_refused() -> None:
    with pytest.raises(Refused):
        check_analyzable("SELECT my_func(1)")
    assert check_analyzable("SELECT random()").kind == "SELECT"


def test_refusal_is_a_usage_error_exit_2() -> None:
    with pytest.raises(Refused) as info:
        check_analyzable("DELETE FROM t")
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    "text",
    [
        "SELECT * FROM t WHERE a = $1",
        "UPDATE t SET a = $1 WHERE id = $2",
        "DELETE FROM t WHERE id = $1",
        "INSERT INTO t (a) VALUES ($1)",
    ],
)
def test_plannable_statements(text: str) -> None:
    assert check_plannable(text).placeholders


@pytest.mark.parametrize(
    "text",
    ["CREATE TABLE x (a int)", "SELECT 1; SELECT 2", "VACUUM t", "SET work_mem = '1GB'"],
)
def test_unplannable_statements(text: str) -> None:
    with pytest.raises(Refused):
        check_plannable(text)
