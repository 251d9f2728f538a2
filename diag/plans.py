"""Query plans: the plan tree model, and the three ways to get a plan, in order of preference.

1. **auto_explain** plans of real executions, read from the server's jsonlog and joined
   to pg_stat_statements by ``query_id`` (``JsonlogPlans``): no re-execution at all.
2. **generic plans** for normalized text with ``$n`` placeholders (``generic_plan``):
   ``EXPLAIN (GENERIC_PLAN)`` on PostgreSQL 16+, else ``PREPARE`` with every parameter
   type left to the server (a parameter it cannot type, e.g. one the text never uses, is
   declared ``text`` and the PREPARE retried) + ``SET LOCAL plan_cache_mode =
   force_generic_plan`` + ``EXPLAIN EXECUTE`` with NULLs, in a READ ONLY transaction that
   is rolled back, then ``DEALLOCATE``. Nothing is executed.
3. **EXPLAIN ANALYZE** (``analyze_plan``) only when asked, only for a statement that
   ``diag.sqlsafety.check_analyzable`` accepts, in a READ ONLY transaction with
   statement_timeout and lock_timeout, always rolled back.

Plan condition strings (Filter, Index Cond, ...) from real executions hold literals:
they are redacted when a ``PlanNode`` is built, so no literal reaches a report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from diag.sqlsafety import Refused, check_analyzable, check_plannable
from probes.errors import UsageError
from probes.postgres import Conn, rows, server_info
from probes.postgres.catalog import function_volatility
from probes.postgres.sqltext import placeholders, redact_literals
from probes.sqlfiles import load_sql

# Plan keys that carry expressions (and so possibly literals).
_EXPR_KEYS = (
    "Filter",
    "Index Cond",
    "Recheck Cond",
    "Join Filter",
    "Hash Cond",
    "Merge Cond",
    "One-Time Filter",
    "TID Cond",
)

ANALYZE_STATEMENT_TIMEOUT_MS = 30_000
ANALYZE_LOCK_TIMEOUT_MS = 1_000


@dataclass(frozen=True)
class PlanNode:
    """One plan node; times in ms, ``actual_*`` None for estimated-only plans."""

    node_id: int  # pre-order position in the tree (0 = root)
    node_type: str
    relation: str | None
    schema: str | None
    alias: str | None
    index_name: str | None
    parent_relationship: str | None
    startup_cost: float
    total_cost: float
    plan_rows: float
    actual_rows: float | None  # per loop
    actual_loops: float | None
    actual_total_ms: float | None  # per loop
    conditions: dict[str, str]  # Filter, Index Cond, ... (literals redacted)
    rows_removed_by_filter: float | None  # per loop
    rows_removed_by_join_filter: float | None
    sort_method: str | None
    sort_space_type: str | None  # Memory / Disk
    sort_space_kb: float | None
    hash_batches: int | None
    original_hash_batches: int | None
    peak_memory_kb: float | None
    exact_heap_blocks: float | None
    lossy_heap_blocks: float | None
    heap_fetches: float | None
    temp_written_blocks: float | None
    children: tuple[PlanNode, ...] = ()
    # processes running this node concurrently (workers + leader under a Gather): their
    # per-loop times overlap, so wall time is loops x time / participants
    participants: float = 1.0

    @property
    def has_actuals(self) -> bool:
        return self.actual_total_ms is not None

    @property
    def inclusive_ms(self) -> float:
        """Time in this node and below, over all loops."""
        if self.actual_total_ms is None:
            return 0.0
        loops = self.actual_loops or 1.0
        return self.actual_total_ms * max(loops / self.participants, 1.0 if loops else 0.0)

    @property
    def exclusive_ms(self) -> float:
        return max(self.inclusive_ms - sum(c.inclusive_ms for c in self.children), 0.0)

    @property
    def exclusive_cost(self) -> float:
        return max(self.total_cost - sum(c.total_cost for c in self.children), 0.0)

    @property
    def rows_total(self) -> float:
        """Actual rows over all loops (estimated rows for estimated plans)."""
        if self.actual_rows is None:
            return self.plan_rows
        return self.actual_rows * (self.actual_loops or 1.0)

    def label(self) -> str:
        text = self.node_type
        if self.index_name:
            text += f" using {self.index_name}"
        if self.relation:
            text += f" on {self.relation}"
            if self.alias and self.alias != self.relation:
                text += f" {self.alias}"
        return text

    def walk(self) -> Iterator[PlanNode]:
        yield self
        for child in self.children:
            yield from child.walk()

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "node_type": self.node_type,
            "label": self.label(),
            "relation": self.relation,
            "index_name": self.index_name,
            "total_cost": self.total_cost,
            "plan_rows": self.plan_rows,
            "actual_rows": self.actual_rows,
            "actual_loops": self.actual_loops,
            "inclusive_ms": self.inclusive_ms if self.has_actuals else None,
            "exclusive_ms": self.exclusive_ms if self.has_actuals else None,
            "conditions": dict(self.conditions),
            "children": [c.to_json() for c in self.children],
        }


@dataclass(frozen=True)
class Plan:
    """A whole plan and where it came from."""

    source: str  # auto_explain | generic | estimate | analyze
    root: PlanNode
    planning_ms: float | None = None
    execution_ms: float | None = None  # EXPLAIN ANALYZE's Execution Time
    duration_ms: float | None = None  # auto_explain's logged duration
    jit_ms: float | None = None
    query_id: int | None = None
    logged_at: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def has_actuals(self) -> bool:
        return self.root.has_actuals

    @property
    def total_ms(self) -> float | None:
        """Execution time of the plan when it has actuals."""
        if self.execution_ms is not None:
            return self.execution_ms
        if self.duration_ms is not None:
            return self.duration_ms
        return self.root.inclusive_ms if self.has_actuals else None

    def nodes(self) -> list[PlanNode]:
        return list(self.root.walk())

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "query_id": self.query_id,
            "planning_ms": self.planning_ms,
            "execution_ms": self.execution_ms,
            "duration_ms": self.duration_ms,
            "jit_ms": self.jit_ms,
            "total_cost": self.root.total_cost,
            "logged_at": self.logged_at,
            "notes": list(self.notes),
            "root": self.root.to_json(),
        }


# ---------------------------------------------------------------- parsing EXPLAIN JSON


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None


def _node(raw: dict[str, Any], counter: list[int], participants: float = 1.0) -> PlanNode:
    node_id = counter[0]
    counter[0] += 1
    below = participants
    if str(raw.get("Node Type", "")).startswith("Gather"):
        launched = raw.get("Workers Launched", raw.get("Workers Planned", 0))
        below = float(launched or 0) + 1.0  # the leader takes part too (the default)
    children = tuple(_node(c, counter, below) for c in raw.get("Plans", []) if isinstance(c, dict))
    conditions = {
        key: redact_literals(str(raw[key])) for key in _EXPR_KEYS if raw.get(key) is not None
    }
    return PlanNode(
        node_id=node_id,
        node_type=str(raw.get("Node Type", "?")),
        relation=raw.get("Relation Name"),
        schema=raw.get("Schema"),
        alias=raw.get("Alias"),
        index_name=raw.get("Index Name"),
        parent_relationship=raw.get("Parent Relationship"),
        startup_cost=float(raw.get("Startup Cost", 0.0)),
        total_cost=float(raw.get("Total Cost", 0.0)),
        plan_rows=float(raw.get("Plan Rows", 0.0)),
        actual_rows=_num(raw.get("Actual Rows")),
        actual_loops=_num(raw.get("Actual Loops")),
        actual_total_ms=_num(raw.get("Actual Total Time")),
        conditions=conditions,
        rows_removed_by_filter=_num(raw.get("Rows Removed by Filter")),
        rows_removed_by_join_filter=_num(raw.get("Rows Removed by Join Filter")),
        sort_method=raw.get("Sort Method"),
        sort_space_type=raw.get("Sort Space Type"),
        sort_space_kb=_num(raw.get("Sort Space Used")),
        hash_batches=_int(raw.get("Hash Batches")),
        original_hash_batches=_int(raw.get("Original Hash Batches")),
        peak_memory_kb=_num(raw.get("Peak Memory Usage")),
        exact_heap_blocks=_num(raw.get("Exact Heap Blocks")),
        lossy_heap_blocks=_num(raw.get("Lossy Heap Blocks")),
        heap_fetches=_num(raw.get("Heap Fetches")),
        temp_written_blocks=_num(raw.get("Temp Written Blocks")),
        children=children,
        participants=participants,
    )


def parse_plan(
    data: Any,
    *,
    source: str,
    query_id: int | None = None,
    duration_ms: float | None = None,
    logged_at: str | None = None,
    notes: tuple[str, ...] = (),
) -> Plan:
    """A ``Plan`` from EXPLAIN (FORMAT JSON) output (the list or its one object) or from
    an auto_explain JSON message body."""
    if isinstance(data, list):
        data = data[0]
    if not isinstance(data, dict) or "Plan" not in data:
        raise ValueError("not an EXPLAIN JSON document")
    jit = data.get("JIT")
    jit_ms = None
    if isinstance(jit, dict) and isinstance(jit.get("Timing"), dict):
        jit_ms = _num(jit["Timing"].get("Total"))
    return Plan(
        source=source,
        root=_node(data["Plan"], [0]),
        planning_ms=_num(data.get("Planning Time")),
        execution_ms=_num(data.get("Execution Time")),
        duration_ms=duration_ms,
        jit_ms=jit_ms,
        query_id=query_id,
        logged_at=logged_at,
        notes=notes,
    )


# ---------------------------------------------------------------- 1. auto_explain jsonlog

_AUTO_EXPLAIN = re.compile(r"^duration: ([0-9.]+) ms\s+plan:\s*", re.DOTALL)


@dataclass(frozen=True)
class LoggedPlan:
    """One auto_explain record from the jsonlog (the Query Text is dropped: literals)."""

    query_id: int
    duration_ms: float
    logged_at: str
    dbname: str | None
    plan: Plan


def parse_jsonlog_line(line: str) -> LoggedPlan | None:
    """The auto_explain plan in one jsonlog line, or None for any other line."""
    if '"plan:' not in line and "plan:\\n" not in line:
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    message = record.get("message") if isinstance(record, dict) else None
    if not isinstance(message, str):
        return None
    match = _AUTO_EXPLAIN.match(message)
    if not match:
        return None
    try:
        body = json.loads(message[match.end() :])
        query_id = int(record.get("query_id") or 0)
        duration = float(match.group(1))
        plan = parse_plan(
            body,
            source="auto_explain",
            query_id=query_id,
            duration_ms=duration,
            logged_at=str(record.get("timestamp", "")),
        )
    except (ValueError, TypeError, KeyError):
        return None
    if not query_id:
        return None
    return LoggedPlan(
        query_id, duration, str(record.get("timestamp", "")), record.get("dbname"), plan
    )


class JsonlogPlans:
    """Reads auto_explain plans from a jsonlog file incrementally, keyed by query_id.

    ``poll()`` reads what was appended since the last call (a partial last line waits for
    the next call) and keeps, per query_id, the slowest plan seen. A rotated or truncated
    file is read again from its start.
    """

    def __init__(self, path: Path, *, from_end: bool = False, max_bytes: int = 64 << 20) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._offset = 0
        self._inode: int | None = None
        self._plans: dict[int, LoggedPlan] = {}
        if from_end:
            try:
                stat = path.stat()
                self._offset, self._inode = stat.st_size, stat.st_ino
            except OSError:
                pass

    def poll(self) -> list[LoggedPlan]:
        try:
            stat = self.path.stat()
        except OSError:
            return []
        if self._inode != stat.st_ino or stat.st_size < self._offset:
            self._offset, self._inode = 0, stat.st_ino
        if stat.st_size - self._offset > self.max_bytes:  # only the recent part of a huge log
            self._offset = stat.st_size - self.max_bytes
        new: list[LoggedPlan] = []
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        for raw in chunk[: end + 1].splitlines():
            found = parse_jsonlog_line(raw.decode("utf-8", "replace"))
            if found is None:
                continue
            new.append(found)
            old = self._plans.get(found.query_id)
            if old is None or found.duration_ms >= old.duration_ms:
                self._plans[found.query_id] = found
        return new

    def plan_for(self, query_id: int) -> Plan | None:
        found = self._plans.get(query_id)
        return found.plan if found else None

    def query_ids(self) -> set[int]:
        return set(self._plans)


# ---------------------------------------------------------------- 2. generic / estimated

_UNTYPED = re.compile(r"could not determine data type of parameter \$(\d+)")
_PREPARED_NAME = "archon_diag_plan"


def _local_timeouts(conn: Conn, statement_ms: int, lock_ms: int) -> None:
    rows(
        conn,
        "local_timeouts",
        {"statement_timeout": f"{statement_ms}ms", "lock_timeout": f"{lock_ms}ms"},
    )


def _statement(template: str, text: str, **extra: sql.Composable) -> sql.Composed:
    return sql.SQL(load_sql(template)).format(statement=sql.SQL(text.strip().rstrip(";")), **extra)


def _explain_rows(conn: Conn, query: sql.Composed) -> Any:
    with conn.cursor() as cur:
        cur.execute(query)
        row = cur.fetchone()
    assert row is not None
    value = row[0]
    return json.loads(value) if isinstance(value, str) else value


def estimated_plan(conn: Conn, text: str, *, server_version_num: int | None = None) -> Plan:
    """The planner's plan for ``text`` without executing it: generic when the text has
    ``$n`` placeholders, else a plain EXPLAIN. Raises ``Refused`` for unplannable text."""
    checked = check_plannable(text)
    if checked.placeholders or placeholders(text):
        return generic_plan(conn, text, server_version_num=server_version_num)
    with _read_only_tx(conn):
        _local_timeouts(conn, 5000, 1000)
        data = _explain_rows(conn, _statement("explain_json", text))
    return parse_plan(data, source="estimate")


def generic_plan(conn: Conn, text: str, *, server_version_num: int | None = None) -> Plan:
    """Generic plan of text with ``$n`` placeholders (nothing is executed)."""
    check_plannable(text)
    n = placeholders(text)
    if n == 0:
        return estimated_plan(conn, text)
    version = server_version_num or server_info(conn).version_num
    if version >= 160000:
        with _read_only_tx(conn):
            _local_timeouts(conn, 5000, 1000)
            data = _explain_rows(conn, _statement("explain_generic_pg16", text))
        return parse_plan(data, source="generic")
    return _generic_by_prepare(conn, text, n)


def _generic_by_prepare(conn: Conn, text: str, n: int) -> Plan:
    types = ["unknown"] * n
    name = sql.Identifier(_PREPARED_NAME)
    notes: list[str] = []
    for _attempt in range(n + 1):
        try:
            with _read_only_tx(conn):
                _local_timeouts(conn, 5000, 1000)
                type_list = sql.SQL(", ").join(sql.SQL(t) for t in types)
                conn.execute(_statement("prepare_statement", text, name=name, types=type_list))
                try:
                    rows(conn, "force_generic_plan")
                    args = sql.SQL(", ").join([sql.SQL("NULL")] * n)
                    explain = sql.SQL(load_sql("explain_execute_generic")).format(
                        name=name, args=args
                    )
                    data = _explain_rows(conn, explain)
                finally:
                    _deallocate(conn, name)
            return parse_plan(data, source="generic", notes=tuple(notes))
        except psycopg.errors.IndeterminateDatatype as exc:
            match = _UNTYPED.search(str(exc))
            if not match or int(match.group(1)) > n or types[int(match.group(1)) - 1] == "text":
                raise
            index = int(match.group(1))
            types[index - 1] = "text"
            notes.append(f"${index} could not be typed by the server (unused?): planned as text")
    raise UsageError("could not prepare the statement for a generic plan")


def _deallocate(conn: Conn, name: sql.Identifier) -> None:
    """Prepared statements outlive transactions: drop ours even when EXPLAIN failed."""
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
        conn.rollback()
        conn.autocommit = True
        try:
            conn.execute(sql.SQL(load_sql("deallocate_statement")).format(name=name))
        finally:
            conn.autocommit = False
    else:
        conn.execute(sql.SQL(load_sql("deallocate_statement")).format(name=name))


class _read_only_tx:
    """A READ ONLY transaction that is always rolled back (even on success)."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self._was_autocommit = conn.autocommit

    def __enter__(self) -> None:
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.conn.rollback()
        self.conn.autocommit = False
        rows(self.conn, "transaction_read_only")

    def __exit__(self, *exc: object) -> None:
        try:
            self.conn.rollback()
        finally:
            self.conn.autocommit = self._was_autocommit


# ---------------------------------------------------------------- 3. EXPLAIN ANALYZE


def analyze_plan(
    conn: Conn,
    text: str,
    *,
    statement_timeout_ms: int = ANALYZE_STATEMENT_TIMEOUT_MS,
    lock_timeout_ms: int = ANALYZE_LOCK_TIMEOUT_MS,
) -> Plan:
    """Execute a validated single read-only SELECT under EXPLAIN ANALYZE, rolled back.

    Raises ``Refused`` (exit 2) for anything else: see ``diag.sqlsafety``.
    """
    check_analyzable(text, lambda names: function_volatility(conn, names))
    with _read_only_tx(conn):
        state = rows(conn, "transaction_read_only_state")[0]["read_only"]
        if state != "on":  # belt and braces: never execute outside a read-only transaction
            raise Refused("refused: could not make the transaction read-only")
        _local_timeouts(conn, statement_timeout_ms, lock_timeout_ms)
        try:
            data = _explain_rows(conn, _statement("explain_analyze", text))
        except psycopg.errors.QueryCanceled:
            raise UsageError(
                f"EXPLAIN ANALYZE stopped after the {statement_timeout_ms} ms statement "
                "timeout (or a lock wait); drop --analyze for an estimated plan"
            ) from None
    return parse_plan(data, source="analyze")


def plan_text(plan: Plan) -> list[str]:
    """A compact indented rendering (one line per node) for logs and tests."""
    lines: list[str] = []

    def visit(node: PlanNode, depth: int) -> None:
        bits = [node.label()]
        if node.has_actuals:
            bits.append(
                f"(actual {node.actual_rows:.0f} rows x{node.actual_loops or 1:.0f}, "
                f"{node.inclusive_ms:.1f} ms, self {node.exclusive_ms:.1f} ms)"
            )
        else:
            bits.append(f"(cost {node.total_cost:.1f}, {node.plan_rows:.0f} rows)")
        lines.append("  " * depth + " ".join(bits))
        for key, value in node.conditions.items():
            lines.append("  " * depth + f"  {key}: {value}")
        for child in node.children:
            visit(child, depth + 1)

    visit(plan.root, 0)
    return lines
