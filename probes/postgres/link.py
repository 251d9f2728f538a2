"""A diagnostic connection that survives a server restart by reconnecting.

``PgLink.call(fn)`` runs ``fn(conn)``; when the connection was lost (server restart,
network blip) it reconnects once and retries. Callers in threads each own one link.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import psycopg

from probes import pgconn
from probes.postgres._common import Conn

T = TypeVar("T")


class PgLink:
    def __init__(self, dsn: str, *, statement_timeout_ms: int = 5000) -> None:
        self._dsn = dsn
        self._timeout = statement_timeout_ms
        self._conn: Conn | None = None
        self.reconnects = 0

    @property
    def conn(self) -> Conn:
        if self._conn is None or self._conn.closed:
            self._conn = pgconn.connect(self._dsn, statement_timeout_ms=self._timeout)
        return self._conn

    def call(self, fn: Callable[[Conn], T]) -> T:
        try:
            return fn(self.conn)
        except psycopg.OperationalError:
            if self._conn is not None and not self._conn.closed:
                raise  # the query failed, not the connection
            self.close()
            self.reconnects += 1
            return fn(self.conn)  # a PrerequisiteError here means the server is gone

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
