"""PostgreSQL collectors: statement snapshots, activity samples, health, catalog look-ups.

Collectors only (records are frozen dataclasses with ``to_json()``); analysis lives in
``diag.dbanalysis``, ``diag.plans`` and ``diag.indexadvice``. Every query is a file in
``sql/`` run on a ``probes.pgconn`` connection (read-only, with timeouts).
"""

from probes.postgres._common import (
    PROBE_MARKER,
    Conn,
    Disabled,
    ServerInfo,
    optional,
    require_pss,
    rows,
    server_info,
)
from probes.postgres.activity import ActivitySample, ActivitySampler, SessionRow
from probes.postgres.catalog import IndexInfo, TableInfo, has_extension, jsonlog_path, table_info
from probes.postgres.health import HealthReport, HealthThresholds, health
from probes.postgres.link import PgLink
from probes.postgres.statements import (
    StatementCounters,
    StatementSampler,
    StatementSnapshot,
    StatementText,
    StatementWindow,
    TimelinePoint,
    diff,
    fetch_texts,
    timeline,
)
from probes.postgres.window import WindowCollector, WindowData

__all__ = [
    "PROBE_MARKER",
    "ActivitySample",
    "ActivitySampler",
    "Conn",
    "Disabled",
    "HealthReport",
    "HealthThresholds",
    "IndexInfo",
    "PgLink",
    "ServerInfo",
    "SessionRow",
    "StatementCounters",
    "StatementSampler",
    "StatementSnapshot",
    "StatementText",
    "StatementWindow",
    "TableInfo",
    "TimelinePoint",
    "WindowCollector",
    "WindowData",
    "diff",
    "fetch_texts",
    "has_extension",
    "health",
    "jsonlog_path",
    "optional",
    "require_pss",
    "rows",
    "server_info",
    "table_info",
    "timeline",
]
