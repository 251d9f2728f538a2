"""Index advice pieces that need no server: filter columns, coverage, the statement."""

from __future__ import annotations

import dataclasses

from diag.indexadvice import (
    FilterColumns,
    covering_index,
    create_statement,
    filter_columns,
    quote_ident,
    selective_columns,
)
from probes.postgres.catalog import IndexInfo, TableInfo


def _table(*indexes: IndexInfo) -> TableInfo:
    return TableInfo(relid=1, schemaname="public", relname="tasks", reltuples=1e5, indexes=indexes)


def _index(name: str, *cols: str, valid: bool = True, partial: bool = False) -> IndexInfo:
    return IndexInfo(name, "btree", False, valid, partial, tuple(cols))


def test_filter_columns_from_plan_filters() -> None:
    assert filter_columns("((project_id = $1) AND (status = $?::text))").key == (
        "project_id",
        "status",
    )
    cols = filter_columns("((created_at >= $?) AND (archived IS NULL) AND (t.owner = ANY ($1)))")
    assert cols == FilterColumns(("archived", "owner"), ("created_at",))
    assert cols.key == ("archived", "owner", "created_at")
    # LIKE '%x%', functions of columns and column-to-column comparisons are not indexable here
    assert filter_columns("(title ~~ $?::text)").key == ()
    assert filter_columns("(lower(title) = $1)").key == ()
    assert filter_columns("(a = b)").key == ()
    assert filter_columns("(a = (SubPlan 1))").key == ("a",)


def test_covering_index_checks_leading_columns() -> None:
    cols = FilterColumns(("project_id", "status"), ())
    assert covering_index(_table(), cols) is None
    assert covering_index(_table(_index("i1", "project_id")), cols) == "i1"
    assert covering_index(_table(_index("i2", "status", "project_id")), cols) == "i2"
    # an index that leads with another column does not cover
    assert covering_index(_table(_index("i3", "created_at", "project_id")), cols) is None
    # invalid or partial indexes do not count
    assert covering_index(_table(_index("i4", "project_id", valid=False)), cols) is None
    assert covering_index(_table(_index("i5", "project_id", partial=True)), cols) is None


def test_an_index_on_a_flag_does_not_cover_a_selective_filter() -> None:
    # the generic plan of the stand-in's per-project task list: archived is a boolean
    flag = _index("idx_tasks_archived", "archived")
    table = dataclasses.replace(
        _table(flag), distinct=(("archived", 2.0), ("project_id", 250.0), ("id", -1.0))
    )
    cols = selective_columns(table, filter_columns("((project_id = $1) AND (archived = $2))"))
    assert cols.key == ("project_id",)
    assert covering_index(table, cols) is None
    assert covering_index(dataclasses.replace(table, indexes=(_index("p", "project_id"),)), cols)
    # a negative n_distinct is a share of the rows; a unique column is the most selective
    assert table.distinct_values("id") == 1e5
    assert selective_columns(table, FilterColumns(("project_id", "id"), ())).key == (
        "id",
        "project_id",
    )
    # without statistics the filter's own order stays, and the flag still covers
    bare = _table(flag)
    cols = selective_columns(bare, filter_columns("((project_id = $1) AND (archived = $2))"))
    assert cols.key == ("project_id", "archived")
    assert covering_index(bare, cols) == "idx_tasks_archived"


def test_create_statement_is_ready_to_run() -> None:
    text = create_statement(_table(), ("project_id", "status"))
    assert text == (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_tasks_project_id_status "
        "ON public.tasks (project_id, status);"
    )
    assert quote_ident("Order") == '"Order"' and quote_ident("user") == '"user"'
    assert quote_ident('we"ird') == '"we""ird"'
