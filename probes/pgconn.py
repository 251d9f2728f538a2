"""The one way the tool opens a diagnostic PostgreSQL connection.

Every diagnostic session is read-only by default and carries a short
``statement_timeout`` and ``lock_timeout`` so a check can never hold locks or run long
on the user's server. Connection failures become one-line ``PrerequisiteError``s with the
password redacted.
"""

from __future__ import annotations

import psycopg

from probes.errors import PrerequisiteError
from probes.redact import redact_dsn

APPLICATION_NAME = "archon-diag"
DEFAULT_STATEMENT_TIMEOUT_MS = 5000
DEFAULT_LOCK_TIMEOUT_MS = 1000


def connect(
    dsn: str,
    *,
    read_only: bool = True,
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    autocommit: bool = True,
    connect_timeout_s: int = 5,
) -> psycopg.Connection[tuple[object, ...]]:
    """Open a diagnostic connection (autocommit, read-only, timeouts set)."""
    options = f"-c statement_timeout={statement_timeout_ms} -c lock_timeout={lock_timeout_ms}"
    if read_only:
        options += " -c default_transaction_read_only=on"
    try:
        return psycopg.connect(
            dsn,
            autocommit=autocommit,
            connect_timeout=connect_timeout_s,
            application_name=APPLICATION_NAME,
            options=options,
        )
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PrerequisiteError(
            f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {reason} "
            "(check the DSN, that the server runs, and pg_hba.conf)"
        ) from None
