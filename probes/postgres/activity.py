"""Active-session-history sampling of pg_stat_activity (cheap enough for every 100-250 ms).

One query per sample over pg_stat_activity (shared memory, no locks), plus
``pg_blocking_pids`` only for the backends waiting on a Lock (that function is costly).
Query texts from pg_stat_activity hold literals: they are redacted here, before a
record exists.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from probes.postgres._common import Conn, rows, server_info
from probes.postgres.sqltext import one_line, redact_literals

_SHARED_TEXT = ("datname", "usename", "application_name", "client_addr", "state",
                "wait_event_type", "wait_event", "query")  # fmt: skip


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One client backend at sample time."""

    pid: int
    datname: str | None
    usename: str | None
    application_name: str
    client_addr: str | None
    client_port: int | None
    state: str | None  # active, idle, idle in transaction, ... (None: hidden by privileges)
    wait_event_type: str | None
    wait_event: str | None
    query_id: int | None  # PG 14+; None when not computed or hidden
    xact_age_s: float | None
    query_age_s: float | None
    state_age_s: float | None
    query: str | None  # literals redacted, cut to one line; None for idle sessions
    blockers: tuple[int, ...] = ()  # pg_blocking_pids, only for Lock waits

    @property
    def active(self) -> bool:
        return self.state == "active"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["blockers"] = list(self.blockers)
        return data


@dataclass(frozen=True, slots=True)
class ActivitySample:
    """All client sessions at one moment (``t``: epoch seconds)."""

    t: float
    cost_ms: float  # client-side time of this sample's queries
    max_connections: int
    reserved_connections: int
    sessions: tuple[SessionRow, ...] = field(default_factory=tuple)

    @property
    def connections(self) -> int:
        """Client connections including the sampler's own."""
        return len(self.sessions) + 1

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["sessions"] = [s.to_json() for s in self.sessions]
        data["connections"] = self.connections
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ActivitySample:
        sessions = []
        for s in data.get("sessions", []):
            s = dict(s)
            s["blockers"] = tuple(s.get("blockers") or ())
            # a live view holds minutes of samples: share the few distinct texts (states,
            # wait events, redacted queries) instead of a copy per session per sample
            for key in _SHARED_TEXT:
                if isinstance(s.get(key), str):
                    s[key] = sys.intern(s[key])
            sessions.append(SessionRow(**s))
        return cls(
            t=float(data["t"]),
            cost_ms=float(data.get("cost_ms", 0.0)),
            max_connections=int(data["max_connections"]),
            reserved_connections=int(data.get("reserved_connections", 0)),
            sessions=tuple(sessions),
        )


class ActivitySampler:
    """Samples pg_stat_activity on one connection (callable from a thread).

    The connection should be dedicated to sampling: psycopg prepares the repeated query
    server-side after a few executions, which is most of what keeps a sample cheap.
    """

    def __init__(self, *, query_chars: int = 200) -> None:
        self.query_chars = query_chars
        self._sql_name: str | None = None
        self._limits: tuple[int, int] | None = None

    def sample(self, conn: Conn) -> ActivitySample:
        if self._sql_name is None or self._limits is None:
            info = server_info(conn)
            self._sql_name = "activity_pg14" if info.version_num >= 140000 else "activity_pg13"
            lim = rows(conn, "connection_limits")[0]
            self._limits = (int(lim["max_connections"]), int(lim["reserved_connections"]))
        started = time.perf_counter()
        t = time.time()
        found = rows(conn, self._sql_name)
        lock_waiters = [int(r["pid"]) for r in found if r["wait_event_type"] == "Lock"]
        blockers: dict[int, tuple[int, ...]] = {}
        if lock_waiters:
            for r in rows(conn, "blocking_pids", {"pids": lock_waiters}):
                blockers[int(r["pid"])] = tuple(int(p) for p in (r["blockers"] or ()))
        cost_ms = (time.perf_counter() - started) * 1000
        sessions = tuple(self._session(r, blockers.get(int(r["pid"]), ())) for r in found)
        return ActivitySample(
            t=t,
            cost_ms=cost_ms,
            max_connections=self._limits[0],
            reserved_connections=self._limits[1],
            sessions=sessions,
        )

    def _session(self, r: dict[str, Any], blockers: tuple[int, ...]) -> SessionRow:
        query = r["query"]
        qid = r["query_id"]
        return SessionRow(
            pid=int(r["pid"]),
            datname=r["datname"],
            usename=r["usename"],
            application_name=str(r["application_name"] or ""),
            client_addr=r["client_addr"],
            client_port=int(r["client_port"]) if r["client_port"] is not None else None,
            state=r["state"],
            wait_event_type=r["wait_event_type"],
            wait_event=r["wait_event"],
            query_id=int(qid) if qid else None,
            xact_age_s=_f(r["xact_age_s"]),
            query_age_s=_f(r["query_age_s"]),
            state_age_s=_f(r["state_age_s"]),
            query=_redacted(str(query), self.query_chars) if query else None,
            blockers=blockers,
        )


@lru_cache(maxsize=2048)
def _redacted(text: str, limit: int) -> str:
    # sessions repeat the same texts sample after sample: redact each text once
    return one_line(redact_literals(text), limit)


def _f(value: Any) -> float | None:
    return float(value) if value is not None else None
