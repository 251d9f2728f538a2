"""Index advice: a ready ``CREATE INDEX`` for sequential scans with selective filters.

For each Seq Scan whose filter keeps a small share of the rows it reads, the filter's
columns become a candidate (equality columns first, then one range column). Where ANALYZE
has statistics, an equality column that narrows little on its own (a flag, a status with
a few values: more than 10 % of the rows per value) is left out when a selective one is
there, and the selective ones go most selective first; so an index that leads with such
a flag does not count as covering. A candidate is dropped when an existing valid index
already leads with one of its equality columns or with its exact columns. When the
hypopg extension is installed in the database, the candidates (each column alone, then
the whole key) are tried as hypothetical indexes and one is kept only if the planner's
cost drops by at least 50 %; without hypopg the suggestion is marked unverified. Nothing
is created: the statement is for the user.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from pglast import ast, enums, keywords, parse_sql
from pglast.parser import ParseError
from psycopg import sql

from diag.plans import Plan, PlanNode
from probes.postgres import Conn, rows
from probes.postgres.catalog import TableInfo, has_extension, table_info

MAX_SELECTIVITY = 0.1
MIN_ROWS = 5_000
MIN_COST_DROP = 0.5
_EQ_OPS = {"="}
_RANGE_OPS = {"<", ">", "<=", ">="}


@dataclass(frozen=True)
class IndexSuggestion:
    table: str  # schema.table
    columns: tuple[str, ...]
    statement: str  # CREATE INDEX CONCURRENTLY ... (ready to run)
    node_id: int
    selectivity: float  # share of rows the filter keeps
    rows_read: float
    verified: bool | None  # True: hypopg confirmed; None: hypopg not available
    cost_before: float | None
    cost_after: float | None
    saving_fraction: float  # share of the statement's time (or cost) it could save
    basis: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Skipped:
    """A candidate that was not suggested, and why (for the evidence)."""

    table: str
    columns: tuple[str, ...]
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FilterColumns:
    equality: tuple[str, ...]
    ranges: tuple[str, ...]

    @property
    def key(self) -> tuple[str, ...]:
        return (*self.equality[:2], *self.ranges[:1])[:3]


def filter_columns(condition: str) -> FilterColumns:
    """Columns compared with constants/parameters in a plan's Filter text.

    >>> filter_columns("((project_id = $1) AND (status = $?::text))")
    FilterColumns(equality=('project_id', 'status'), ranges=())
    >>> filter_columns("((created_at > $1) AND (t.owner = ANY ($2)))")
    FilterColumns(equality=('owner',), ranges=('created_at',))
    """
    text = condition.replace("$?", "NULL")
    text = re.sub(r"\(SubPlan \d+\)|\(InitPlan \d+\)", "NULL", text)
    try:
        stmt = parse_sql(f"SELECT 1 FROM t WHERE {text}")[0].stmt
    except ParseError:
        return FilterColumns((), ())
    assert isinstance(stmt, ast.SelectStmt)
    eq: list[str] = []
    rng: list[str] = []
    for expr in _conjuncts(stmt.whereClause):
        col, kind = _comparison(expr)
        if col is None:
            continue
        target = eq if kind == "eq" else rng
        if col not in eq and col not in rng:
            target.append(col)
    return FilterColumns(tuple(eq), tuple(rng))


def _conjuncts(node: Any) -> list[Any]:
    if isinstance(node, ast.BoolExpr) and node.boolop == enums.BoolExprType.AND_EXPR:
        out: list[Any] = []
        for arg in node.args or ():
            out.extend(_conjuncts(arg))
        return out
    return [node]


def _column(node: Any) -> str | None:
    while isinstance(node, ast.TypeCast):
        node = node.arg
    if isinstance(node, ast.ColumnRef):
        last = (node.fields or ())[-1:]
        if last and isinstance(last[0], ast.String):
            return str(last[0].sval)
    return None


def _has_column(node: Any) -> bool:
    if isinstance(node, ast.ColumnRef):
        return True
    if isinstance(node, ast.Node):
        for name in node:
            value = getattr(node, name)
            items = value if isinstance(value, tuple) else (value,)
            if any(_has_column(v) for v in items):
                return True
    return False


def _comparison(expr: Any) -> tuple[str | None, str]:
    if isinstance(expr, ast.NullTest):
        col = _column(expr.arg)
        return col, "eq"
    if not isinstance(expr, ast.A_Expr):
        return None, ""
    op = str(expr.name[-1].sval) if expr.name else ""
    kind = expr.kind
    if kind == enums.A_Expr_Kind.AEXPR_BETWEEN:
        return _column(expr.lexpr), "range"
    if kind not in (
        enums.A_Expr_Kind.AEXPR_OP,
        enums.A_Expr_Kind.AEXPR_OP_ANY,
        enums.A_Expr_Kind.AEXPR_IN,
    ):
        return None, ""
    left, right = _column(expr.lexpr), _column(expr.rexpr)
    if left and not _has_column(expr.rexpr):
        col = left
    elif right and not _has_column(expr.lexpr) and kind == enums.A_Expr_Kind.AEXPR_OP:
        col = right
    else:
        return None, ""
    if op in _EQ_OPS:
        return col, "eq"
    if op in _RANGE_OPS:
        return col, "range"
    return None, ""


def selective_columns(table: TableInfo, cols: FilterColumns) -> FilterColumns:
    """``cols`` without the equality columns that narrow little on their own (when a
    selective one is there), the most selective first; as they are without statistics.

    >>> t = TableInfo(1, "public", "tasks", 1e5, (), (("project_id", 250.0), ("archived", 2.0)))
    >>> selective_columns(t, FilterColumns(("archived", "project_id"), ()))
    FilterColumns(equality=('project_id',), ranges=())
    >>> selective_columns(t, FilterColumns(("archived",), ()))
    FilterColumns(equality=('archived',), ranges=())
    """
    known = {c: table.distinct_values(c) for c in cols.equality}
    selective = [c for c, n in known.items() if n is None or n * MAX_SELECTIVITY >= 1.0]
    if not selective:
        return cols
    # unknown statistics keep their place after the columns known to be selective
    selective.sort(key=lambda c: -(known[c] or 0.0))
    return FilterColumns(tuple(selective), cols.ranges)


def covering_index(table: TableInfo, cols: FilterColumns) -> str | None:
    """The name of an existing valid index that already covers the candidate's leading
    columns, or None."""
    key = cols.key
    for index in table.indexes:
        if not index.is_valid or index.is_partial or not index.columns:
            continue
        lead = index.columns[0]
        prefix = set(index.columns[: len(key)])
        if (lead is not None and lead in cols.equality) or prefix == set(key):
            return index.name
    return None


def _selectivity(node: PlanNode, table: TableInfo) -> tuple[float, float]:
    """(share of rows the filter keeps, rows read per loop)."""
    if node.actual_rows is not None:
        read = node.actual_rows + (node.rows_removed_by_filter or 0.0)
        return (node.actual_rows / read if read else 1.0), read
    total = max(table.reltuples, 0.0)
    return (node.plan_rows / total if total else 1.0), total


def _index_name(table: str, columns: tuple[str, ...]) -> str:
    name = "idx_" + "_".join((table, *columns))
    return re.sub(r"[^a-z0-9_]", "_", name.lower())[:63]


_KEYWORDS = frozenset(
    k.lower()
    for k in (
        *keywords.RESERVED_KEYWORDS,
        *keywords.TYPE_FUNC_NAME_KEYWORDS,
        *keywords.COL_NAME_KEYWORDS,
    )
)


def quote_ident(name: str) -> str:
    """An identifier as PostgreSQL needs it: bare when plain, else double-quoted.

    >>> quote_ident("tasks"), quote_ident("Order"), quote_ident("user")
    ('tasks', '"Order"', '"user"')
    """
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) and name not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def create_statement(table: TableInfo, columns: tuple[str, ...]) -> str:
    """The ready-to-run statement (CONCURRENTLY: no write lock on a live table)."""
    cols = ", ".join(quote_ident(c) for c in columns)
    name = quote_ident(_index_name(table.relname, columns))
    return (
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name}"
        f" ON {quote_ident(table.schemaname)}.{quote_ident(table.relname)} ({cols});"
    )


PlanFn = Callable[[Conn], Plan]


def advise(
    conn: Conn,
    plan: Plan,
    *,
    replan: PlanFn | None = None,
    use_hypopg: bool | None = None,
) -> tuple[list[IndexSuggestion], list[Skipped]]:
    """Index suggestions for ``plan``'s selective sequential scans.

    ``replan(conn)`` re-plans the statement (estimated, nothing executed) for the hypopg
    check; without it, or without hypopg, suggestions are unverified.
    """
    suggestions: list[IndexSuggestion] = []
    skipped: list[Skipped] = []
    hypo = (
        use_hypopg
        if use_hypopg is not None
        else replan is not None and has_extension(conn, "hypopg")
    )
    plan_total = plan.root.inclusive_ms if plan.has_actuals else plan.root.total_cost
    for node in plan.nodes():
        if "Seq Scan" not in node.node_type or not node.relation or "Filter" not in node.conditions:
            continue
        table = table_info(conn, node.relation, node.schema)
        if table is None:
            continue
        cols = selective_columns(table, filter_columns(node.conditions["Filter"]))
        if not cols.key:
            skipped.append(Skipped(table.qualified, (), "no indexable comparison in the filter"))
            continue
        selectivity, read = _selectivity(node, table)
        if read < MIN_ROWS or selectivity > MAX_SELECTIVITY:
            skipped.append(
                Skipped(
                    table.qualified,
                    cols.key,
                    f"filter keeps {selectivity:.1%} of {read:,.0f} rows: not selective enough",
                )
            )
            continue
        covered = covering_index(table, cols)
        if covered:
            skipped.append(
                Skipped(table.qualified, cols.key, f"already covered by index {covered}")
            )
            continue
        node_share = (
            (node.inclusive_ms if plan.has_actuals else node.total_cost) / plan_total
            if plan_total
            else 0.0
        )
        if hypo and replan is not None:
            found = _verify(conn, table, cols, replan)
            if found is None:
                skipped.append(
                    Skipped(
                        table.qualified,
                        cols.key,
                        "hypopg: no candidate lowered the planner's cost by 50 %",
                    )
                )
                continue
            columns, before, after = found
            saving = min(1.0 - after / before, node_share) if before else 0.0
            basis = f"hypopg: planner cost {before:,.0f} -> {after:,.0f}"
            verified: bool | None = True
        else:
            columns, before, after = cols.key, None, None
            saving = node_share * 0.9
            basis = "assumed: an index lookup saves 90% of the scan's time (unverified: no hypopg)"
            verified = None
        suggestions.append(
            IndexSuggestion(
                table=table.qualified,
                columns=columns,
                statement=create_statement(table, columns),
                node_id=node.node_id,
                selectivity=selectivity,
                rows_read=read,
                verified=verified,
                cost_before=before,
                cost_after=after,
                saving_fraction=max(min(saving, 1.0), 0.0),
                basis=basis,
            )
        )
    return suggestions, skipped


def _verify(
    conn: Conn, table: TableInfo, cols: FilterColumns, replan: PlanFn
) -> tuple[tuple[str, ...], float, float] | None:
    """The candidate whose hypothetical index lowers the cost most, if by >= 50 %."""
    candidates: list[tuple[str, ...]] = [(c,) for c in cols.key]
    if len(cols.key) > 1:
        candidates.append(cols.key)
    before = replan(conn).root.total_cost
    best: tuple[tuple[str, ...], float] | None = None
    for columns in candidates:
        ddl = sql.SQL("CREATE INDEX ON {schema}.{table} ({cols})").format(
            schema=sql.Identifier(table.schemaname),
            table=sql.Identifier(table.relname),
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        )
        try:
            rows(conn, "hypopg_create_index", {"ddl": ddl.as_string(conn)})
            after = replan(conn).root.total_cost
        except psycopg.OperationalError:
            raise
        except psycopg.Error:
            continue
        finally:
            rows(conn, "hypopg_reset")
        # prefer fewer columns unless more columns are clearly better (5 %)
        if best is None or after < best[1] * 0.95:
            best = (columns, after)
    if best is None or before <= 0 or best[1] > before * (1 - MIN_COST_DROP):
        return None
    return best[0], before, best[1]
