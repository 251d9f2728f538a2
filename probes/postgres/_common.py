"""Shared plumbing of the PostgreSQL collectors: running one named query, turning an
optional query's failure into a one-line hint, and the server facts that pick SQL files.

Nothing here changes the server: every query is a ``sql/<name>.sql`` file run on a
diagnostic connection from ``probes.pgconn.connect`` (read-only, with timeouts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg.rows import dict_row

from probes.errors import PrerequisiteError
from probes.sqlfiles import load_sql

# Every query of ours starts with this comment; pg_stat_statements keeps it in the
# normalized text, so our own statements can be told apart (and their cost measured).
PROBE_MARKER = "-- archon-diag:"

Conn = psycopg.Connection[Any]


def rows(conn: Conn, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run ``sql/<name>.sql`` and return its rows as dicts."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(load_sql(name), params or None)
        return list(cur.fetchall()) if cur.description else []


@dataclass(frozen=True)
class Disabled:
    """An optional check that could not run, and the one line that says how to enable it."""

    check: str
    hint: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def hint_for(check: str, exc: BaseException) -> str:
    """One line explaining why a check failed and what to do about it."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, pgerrors.InsufficientPrivilege):
        fix = "GRANT pg_read_all_stats (or pg_monitor) TO the role"
    elif isinstance(exc, pgerrors.QueryCanceled):
        fix = "the server is slow to answer; try again or raise statement_timeout"
    elif isinstance(exc, (pgerrors.UndefinedTable, pgerrors.UndefinedFunction)):
        fix = "an extension this check needs is not installed in this database"
    elif isinstance(exc, pgerrors.ObjectNotInPrerequisiteState):
        fix = "add the extension to shared_preload_libraries and restart the server"
    else:
        fix = "check skipped"
    return f"{check} disabled: {first} ({fix})"


def optional(
    conn: Conn, check: str, name: str, params: dict[str, Any] | None = None
) -> list[dict[str, Any]] | Disabled:
    """Rows of an optional query, or ``Disabled`` with a hint when it cannot run.

    The connection is in autocommit mode, so a failed statement does not poison it.
    """
    try:
        return rows(conn, name, params)
    except psycopg.OperationalError:
        raise  # a lost connection is the caller's to handle (reconnect), not a check's
    except psycopg.Error as exc:
        _recover(conn)
        return Disabled(check, hint_for(check, exc))


def _recover(conn: Conn) -> None:
    """Leave a failed transaction (when the caller had one open) so the connection goes on."""
    if not conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
        conn.rollback()


@dataclass(frozen=True)
class ServerInfo:
    """What picks the SQL files: server version and pg_stat_statements version."""

    version: str
    version_num: int
    pss_version: str | None  # None: extension not created in this database
    database: str

    @property
    def pss_tuple(self) -> tuple[int, ...]:
        return _version_tuple(self.pss_version) if self.pss_version else ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _version_tuple(text: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in text.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def server_info(conn: Conn) -> ServerInfo:
    facts = rows(conn, "server_facts")[0]
    return ServerInfo(
        version=str(facts["version"]),
        version_num=int(facts["version_num"]),
        pss_version=str(facts["pss_version"]) if facts["pss_version"] else None,
        database=str(facts["database"]),
    )


def require_pss(info: ServerInfo) -> None:
    """Raise the one-line prerequisite error when pg_stat_statements cannot be used."""
    if info.pss_version is None:
        raise PrerequisiteError(
            f"pg_stat_statements is not installed in database {info.database!r}: run "
            "CREATE EXTENSION pg_stat_statements; there (and preload it in "
            "shared_preload_libraries)"
        )
    if info.pss_tuple < (1, 8):
        raise PrerequisiteError(
            f"pg_stat_statements {info.pss_version} is too old (PostgreSQL 13+ with 1.8+ "
            "needed): ALTER EXTENSION pg_stat_statements UPDATE"
        )
