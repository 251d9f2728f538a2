"""pg_stat_statements snapshots and their differences over a window.

A snapshot reads the counters *without* query text (``pg_stat_statements(false)``: the
text file is not read, which keeps a snapshot cheap enough to take every few seconds);
texts are fetched once, for the few statements a report shows (:func:`fetch_texts`).
Columns differ by extension version: 1.8 (PG 13), 1.9-1.10 (PG 14-16), 1.11+ (PG 17,
block times renamed); the SQL file is picked from the installed version.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from probes.postgres._common import (
    PROBE_MARKER,
    Conn,
    ServerInfo,
    require_pss,
    rows,
    server_info,
)

StatementKey = tuple[int, int, int]  # (userid, dbid, queryid)

_COUNTERS = (
    "calls",
    "total_exec_ms",
    "total_plan_ms",
    "rows",
    "shared_blks_hit",
    "shared_blks_read",
    "shared_blks_dirtied",
    "shared_blks_written",
    "temp_blks_read",
    "temp_blks_written",
    "blk_read_ms",
    "blk_write_ms",
)


def statements_sql_name(info: ServerInfo) -> str:
    """The statements query matching the installed pg_stat_statements version."""
    require_pss(info)
    version = info.pss_tuple
    if version >= (1, 11):
        return "statements_pg17"
    if version >= (1, 9):
        return "statements_pg14"
    return "statements_pg13"


@dataclass(frozen=True)
class StatementCounters:
    """Cumulative counters of one statement (or their difference over a window)."""

    userid: int
    dbid: int
    queryid: int
    toplevel: bool
    calls: int
    total_exec_ms: float
    total_plan_ms: float
    rows: int
    shared_blks_hit: int
    shared_blks_read: int
    shared_blks_dirtied: int
    shared_blks_written: int
    temp_blks_read: int
    temp_blks_written: int
    blk_read_ms: float
    blk_write_ms: float

    @property
    def key(self) -> StatementKey:
        return (self.userid, self.dbid, self.queryid)

    @property
    def mean_exec_ms(self) -> float:
        return self.total_exec_ms / self.calls if self.calls else 0.0

    @property
    def rows_per_call(self) -> float:
        return self.rows / self.calls if self.calls else 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean_exec_ms"] = self.mean_exec_ms
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StatementCounters:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class StatementSnapshot:
    """All statements' counters at one moment (wall-clock ``taken_at``, epoch seconds)."""

    taken_at: float
    cost_ms: float  # how long the snapshot query took, client side
    server_version_num: int
    pss_version: str
    statements: tuple[StatementCounters, ...]
    dealloc: int | None = None  # pg_stat_statements_info (1.9+): entries evicted so far
    stats_reset: float | None = None

    def by_key(self) -> dict[StatementKey, StatementCounters]:
        return {s.key: s for s in self.statements}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["statements"] = [s.to_json() for s in self.statements]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StatementSnapshot:
        return cls(
            taken_at=float(data["taken_at"]),
            cost_ms=float(data.get("cost_ms", 0.0)),
            server_version_num=int(data["server_version_num"]),
            pss_version=str(data["pss_version"]),
            statements=tuple(StatementCounters.from_json(s) for s in data["statements"]),
            dealloc=data.get("dealloc"),
            stats_reset=data.get("stats_reset"),
        )


@dataclass(frozen=True)
class StatementWindow:
    """The difference of two snapshots: what ran between ``started`` and ``ended``."""

    started: float
    ended: float
    statements: tuple[StatementCounters, ...]  # only statements with calls in the window
    reset_seen: bool  # statistics were reset or entries evicted: some deltas are partial

    @property
    def seconds(self) -> float:
        return max(self.ended - self.started, 1e-9)

    @property
    def db_time_ms(self) -> float:
        """Execution time of top-level statements in the window (the score's denominator)."""
        return sum(s.total_exec_ms for s in self.statements if s.toplevel)

    def top(self, by: str = "total_exec_ms", n: int = 10) -> list[StatementCounters]:
        """The ``n`` statements with the highest ``by`` (a counter or ``mean_exec_ms``)."""
        return sorted(self.statements, key=lambda s: float(getattr(s, by)), reverse=True)[:n]

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "ended": self.ended,
            "reset_seen": self.reset_seen,
            "db_time_ms": self.db_time_ms,
            "statements": [s.to_json() for s in self.statements],
        }


def diff(a: StatementSnapshot, b: StatementSnapshot) -> StatementWindow:
    """What ran between snapshot ``a`` and the later snapshot ``b``.

    A statement that is new in ``b``, or whose calls went down (reset or eviction and
    re-entry), counts with all of ``b``'s counters: that is what ran since it (re)appeared.
    """
    before = a.by_key()
    out: list[StatementCounters] = []
    reset = (a.stats_reset is not None and b.stats_reset != a.stats_reset) or (
        a.dealloc is not None and b.dealloc is not None and b.dealloc > a.dealloc
    )
    for cur in b.statements:
        prev = before.get(cur.key)
        if prev is not None and cur.calls < prev.calls:
            reset = True
            prev = None
        if prev is None:
            delta = cur
        elif cur.calls == prev.calls:
            continue
        else:
            values = {name: max(getattr(cur, name) - getattr(prev, name), 0) for name in _COUNTERS}
            delta = StatementCounters(
                userid=cur.userid,
                dbid=cur.dbid,
                queryid=cur.queryid,
                toplevel=cur.toplevel,
                **values,
            )
        if delta.calls > 0:
            out.append(delta)
    return StatementWindow(
        started=a.taken_at, ended=b.taken_at, statements=tuple(out), reset_seen=reset
    )


@dataclass(frozen=True)
class TimelinePoint:
    """Database activity between two consecutive snapshots."""

    t: float  # end of the interval, epoch seconds
    seconds: float
    calls_per_s: float
    db_time_ms_per_s: float  # = average active statements x 1000
    top_queryid: int | None  # the statement with the most time in this interval

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def timeline(snapshots: Sequence[StatementSnapshot]) -> list[TimelinePoint]:
    """One point per pair of consecutive snapshots."""
    points: list[TimelinePoint] = []
    for a, b in itertools.pairwise(snapshots):
        window = diff(a, b)
        top = window.top("total_exec_ms", 1)
        points.append(
            TimelinePoint(
                t=b.taken_at,
                seconds=window.seconds,
                calls_per_s=sum(s.calls for s in window.statements) / window.seconds,
                db_time_ms_per_s=window.db_time_ms / window.seconds,
                top_queryid=top[0].queryid if top else None,
            )
        )
    return points


class StatementSampler:
    """Takes pg_stat_statements snapshots on a connection (callable from a thread).

    ``all_databases`` keeps statements of every database; by default only the connected
    database's, the one plans and index advice can be made in.
    """

    def __init__(self, *, all_databases: bool = False) -> None:
        self.all_databases = all_databases
        self._info: ServerInfo | None = None
        self._has_info_view: bool | None = None

    def server(self, conn: Conn) -> ServerInfo:
        """Server and extension versions (read once); raises ``PrerequisiteError``
        with one line when pg_stat_statements is missing or too old."""
        if self._info is None:
            info = server_info(conn)
            require_pss(info)
            self._info = info
        return self._info

    def snapshot(self, conn: Conn) -> StatementSnapshot:
        info = self.server(conn)
        started = time.perf_counter()
        taken_at = time.time()
        found = rows(conn, statements_sql_name(info), {"all_databases": self.all_databases})
        dealloc: int | None = None
        stats_reset: float | None = None
        if info.pss_tuple >= (1, 9) and self._has_info_view is not False:
            import psycopg

            try:
                extra = rows(conn, "statements_info")
                self._has_info_view = True
                if extra:
                    dealloc = int(extra[0]["dealloc"])
                    reset = extra[0]["stats_reset_epoch"]
                    stats_reset = float(reset) if reset is not None else None
            except psycopg.OperationalError:
                raise
            except psycopg.Error:
                self._has_info_view = False
        cost_ms = (time.perf_counter() - started) * 1000
        return StatementSnapshot(
            taken_at=taken_at,
            cost_ms=cost_ms,
            server_version_num=info.version_num,
            pss_version=info.pss_version or "",
            statements=tuple(_counters(r) for r in found),
            dealloc=dealloc,
            stats_reset=stats_reset,
        )

    @staticmethod
    def diff(a: StatementSnapshot, b: StatementSnapshot) -> StatementWindow:
        return diff(a, b)


def _counters(row: dict[str, Any]) -> StatementCounters:
    return StatementCounters(
        userid=int(row["userid"]),
        dbid=int(row["dbid"]),
        queryid=int(row["queryid"]),
        toplevel=bool(row["toplevel"]),
        calls=int(row["calls"] or 0),
        total_exec_ms=float(row["total_exec_ms"] or 0.0),
        total_plan_ms=float(row["total_plan_ms"] or 0.0),
        rows=int(row["rows"] or 0),
        shared_blks_hit=int(row["shared_blks_hit"] or 0),
        shared_blks_read=int(row["shared_blks_read"] or 0),
        shared_blks_dirtied=int(row["shared_blks_dirtied"] or 0),
        shared_blks_written=int(row["shared_blks_written"] or 0),
        temp_blks_read=int(row["temp_blks_read"] or 0),
        temp_blks_written=int(row["temp_blks_written"] or 0),
        blk_read_ms=float(row["blk_read_ms"] or 0.0),
        blk_write_ms=float(row["blk_write_ms"] or 0.0),
    )


@dataclass(frozen=True)
class StatementText:
    """Normalized text of one statement (pg_stat_statements replaces literals by ``$n``)."""

    queryid: int
    query: str
    is_probe: bool  # one of archon-diag's own queries

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def fetch_texts(conn: Conn, queryids: Iterable[int]) -> dict[int, StatementText]:
    """Normalized texts for these queryids (one read of the server's text file)."""
    ids = sorted(set(queryids))
    if not ids:
        return {}
    found = rows(conn, "statement_texts", {"queryids": ids})
    return {
        int(r["queryid"]): StatementText(
            queryid=int(r["queryid"]),
            query=str(r["query"]),
            is_probe=PROBE_MARKER in str(r["query"]),
        )
        for r in found
    }
