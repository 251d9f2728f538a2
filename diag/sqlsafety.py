"""What SQL text the tool may plan, and what it may execute, decided by PostgreSQL's own
parser (pglast wraps libpg_query), never by a regex.

- ``check_plannable``: exactly one SELECT/INSERT/UPDATE/DELETE/MERGE. Plain EXPLAIN of it
  executes nothing; anything else (DDL, utility commands, several statements) is refused.
- ``check_analyzable``: exactly one SELECT that reads only: no ``SELECT ... INTO``, no
  ``FOR UPDATE/SHARE``, no data-modifying statement anywhere (CTEs, subqueries), no
  ``$n`` placeholders (nothing to execute them with), and no volatile function other
  than a few harmless built-ins (a volatile function may write, signal or sleep; the
  READ ONLY transaction catches writes, not ``pg_terminate_backend``).

Refusals are ``Refused`` (a ``UsageError``, exit 2) with one line saying why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.visitors import Visitor

from probes.errors import UsageError

PLANNABLE: dict[type[ast.Node], str] = {
    ast.SelectStmt: "SELECT",
    ast.InsertStmt: "INSERT",
    ast.UpdateStmt: "UPDATE",
    ast.DeleteStmt: "DELETE",
    ast.MergeStmt: "MERGE",
}
_WRITES = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)

# Volatile built-ins that neither write nor act on other sessions.
HARMLESS_VOLATILE = frozenset(
    {
        "random",
        "random_normal",
        "clock_timestamp",
        "timeofday",
        "gen_random_uuid",
        "uuid_generate_v4",
        "pg_sleep",
    }
)
# Refused whatever the server says about them (they act outside the transaction).
ALWAYS_REFUSED = frozenset(
    {
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "set_config",
        "setval",
        "nextval",
        "pg_notify",
        "dblink",
        "dblink_exec",
        "pg_advisory_lock",
        "pg_advisory_xact_lock",
        "pg_try_advisory_lock",
        "pg_read_file",
        "pg_read_binary_file",
        "lo_import",
        "lo_export",
        "pg_logical_emit_message",
    }
)

VolatilityLookup = Callable[[list[str]], dict[str, set[str]]]


class Refused(UsageError):
    """The text may not be planned or executed; the message says why."""


@dataclass(frozen=True)
class Checked:
    """A statement that passed a check."""

    kind: str  # SELECT, INSERT, ...
    functions: tuple[str, ...]  # function names it calls (lower case, no schema)
    placeholders: bool  # has $n parameters


class _Collect(Visitor):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.functions: list[str] = []
        self.writes: list[str] = []
        self.locking = False
        self.params = False

    def visit(self, ancestors: object, node: ast.Node) -> None:
        if isinstance(node, ast.FuncCall):
            names = node.funcname or ()
            if names:
                self.functions.append(str(names[-1].sval).lower())
        elif isinstance(node, _WRITES):
            self.writes.append(PLANNABLE[type(node)])
        elif isinstance(node, ast.LockingClause):
            self.locking = True
        elif isinstance(node, ast.ParamRef):
            self.params = True


def _parse_one(text: str) -> ast.RawStmt:
    if not text.strip():
        raise Refused("empty SQL text")
    try:
        stmts = parse_sql(text)
    except ParseError as exc:
        raise Refused(f"not valid SQL for PostgreSQL: {exc}") from None
    if len(stmts) != 1:
        raise Refused(f"refused: {len(stmts)} statements in the text; give exactly one")
    raw = stmts[0]
    assert isinstance(raw, ast.RawStmt)
    return raw


def _kind(node: ast.Node | None) -> str:
    if node is None:
        return "EMPTY"
    name = PLANNABLE.get(type(node))
    if name:
        return name
    # "CreateStmt" -> "CREATE", "ExplainStmt" -> "EXPLAIN", "VariableSetStmt" -> "SET"
    return type(node).__name__.removesuffix("Stmt").upper() or "UNKNOWN"


def _collect(raw: ast.RawStmt) -> _Collect:
    seen = _Collect()
    seen(raw)
    return seen


def check_plannable(text: str) -> Checked:
    """One statement that plain EXPLAIN can plan without executing it."""
    raw = _parse_one(text)
    stmt = raw.stmt
    if type(stmt) not in PLANNABLE:
        raise Refused(
            f"refused: {_kind(stmt)} is not a plannable statement "
            "(only SELECT, INSERT, UPDATE, DELETE or MERGE can be explained)"
        )
    if isinstance(stmt, ast.SelectStmt) and stmt.intoClause is not None:
        raise Refused("refused: SELECT ... INTO creates a table; only plain SELECT is planned")
    seen = _collect(raw)
    return Checked(_kind(stmt), tuple(seen.functions), seen.params)


def check_analyzable(text: str, volatility: VolatilityLookup | None = None) -> Checked:
    """One read-only SELECT that EXPLAIN ANALYZE may execute (see the module docstring).

    ``volatility`` looks function names up on the server (name -> {'v','s','i'}); without
    it, every function not known to be harmless is refused.
    """
    raw = _parse_one(text)
    stmt = raw.stmt
    if not isinstance(stmt, ast.SelectStmt):
        raise Refused(
            f"refused: EXPLAIN ANALYZE executes the statement; {_kind(stmt)} is not run "
            "(only a single SELECT is)"
        )
    if stmt.intoClause is not None:
        raise Refused("refused: SELECT ... INTO writes a table; it is not executed")
    seen = _collect(raw)
    if seen.writes:
        raise Refused(
            f"refused: the SELECT contains a data-modifying {seen.writes[0]} (e.g. in a WITH "
            "clause); it is not executed"
        )
    if seen.locking:
        raise Refused("refused: SELECT ... FOR UPDATE/SHARE takes row locks; it is not executed")
    if seen.params:
        raise Refused(
            "refused: the text has $n placeholders and nothing to execute them with; pass "
            "the statement with values to --sql, or drop --analyze for a generic plan"
        )
    risky = _risky_functions(seen.functions, volatility)
    if risky:
        raise Refused(
            f"refused: the SELECT calls volatile function {risky[0]}() which may change "
            "state outside the transaction; it is not executed"
        )
    return Checked("SELECT", tuple(seen.functions), False)


def _risky_functions(names: Iterable[str], volatility: VolatilityLookup | None) -> list[str]:
    names = sorted(set(names))
    risky = [n for n in names if n in ALWAYS_REFUSED]
    unknown = [n for n in names if n not in ALWAYS_REFUSED and n not in HARMLESS_VOLATILE]
    if not unknown:
        return risky
    if volatility is None:
        return risky + unknown
    found = volatility(unknown)
    for name in unknown:
        kinds = found.get(name)
        # unknown to the server: the statement will fail anyway; volatile: refuse
        if kinds is not None and "v" in kinds:
            risky.append(name)
    return risky
