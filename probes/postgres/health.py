"""Database health: sequential-scan-heavy tables, unused and duplicate indexes, cache hit
ratios, stale statistics and vacuum, long-running queries.

Each check is one optional query: a check that cannot run (privilege, timeout, missing
view) is listed in ``HealthReport.disabled`` with a one-line hint and the others go on.
Thresholds follow the common rules of thumb (FIELD-NOTES: index-scan share < 95 % with
>= 10k live rows; cache hit < 99 %).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from probes.postgres._common import Conn, Disabled, optional
from probes.postgres.sqltext import one_line, redact_literals


@dataclass(frozen=True)
class HealthThresholds:
    min_rows: int = 10_000
    max_index_share: float = 0.95
    max_unused_scans: int = 0
    max_stale_ratio: float = 0.2
    long_query_s: float = 60.0


@dataclass(frozen=True)
class SeqScanTable:
    schemaname: str
    relname: str
    seq_scan: int
    seq_tup_read: int
    idx_scan: int
    n_live_tup: int
    total_bytes: int

    @property
    def index_share(self) -> float:
        total = self.seq_scan + self.idx_scan
        return self.idx_scan / total if total else 0.0


@dataclass(frozen=True)
class UnusedIndex:
    schemaname: str
    relname: str
    indexrelname: str
    idx_scan: int
    index_bytes: int


@dataclass(frozen=True)
class DuplicateIndexes:
    schemaname: str
    relname: str
    indexes: tuple[str, ...]
    total_bytes: int


@dataclass(frozen=True)
class CacheHit:
    heap_ratio: float | None  # None: nothing read yet
    index_ratio: float | None
    heap_blocks: int
    index_blocks: int


@dataclass(frozen=True)
class StaleTable:
    schemaname: str
    relname: str
    n_live_tup: int
    n_dead_tup: int
    n_mod_since_analyze: int
    analyze_age_s: float | None  # None: never analysed
    vacuum_age_s: float | None


@dataclass(frozen=True)
class LongQuery:
    pid: int
    datname: str | None
    usename: str | None
    application_name: str
    wait_event_type: str | None
    wait_event: str | None
    query_age_s: float
    query: str  # literals redacted


@dataclass(frozen=True)
class HealthReport:
    taken_at: float
    cost_ms: float
    seq_scan_tables: tuple[SeqScanTable, ...] = ()
    unused_indexes: tuple[UnusedIndex, ...] = ()
    duplicate_indexes: tuple[DuplicateIndexes, ...] = ()
    cache_hit: CacheHit | None = None
    stale_tables: tuple[StaleTable, ...] = ()
    long_queries: tuple[LongQuery, ...] = ()
    disabled: tuple[Disabled, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def health(conn: Conn, thresholds: HealthThresholds | None = None) -> HealthReport:
    """Run every health check on ``conn``; failing checks are disabled with a hint."""
    th = thresholds or HealthThresholds()
    started = time.perf_counter()
    taken_at = time.time()
    disabled: list[Disabled] = []

    def run(check: str, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        result = optional(conn, check, name, params)
        if isinstance(result, Disabled):
            disabled.append(result)
            return []
        return result

    seq = run(
        "seq-scan-heavy tables",
        "health_seq_scans",
        {"min_rows": th.min_rows, "max_index_share": th.max_index_share},
    )
    unused = run("unused indexes", "health_unused_indexes", {"max_scans": th.max_unused_scans})
    dups = run("duplicate indexes", "health_duplicate_indexes")
    cache = run("cache hit ratio", "health_cache_hit")
    stale = run(
        "stale statistics and vacuum",
        "health_maintenance",
        {"min_rows": th.min_rows, "max_ratio": th.max_stale_ratio},
    )
    long_q = run("long-running queries", "health_long_queries", {"min_age_s": th.long_query_s})

    return HealthReport(
        taken_at=taken_at,
        cost_ms=(time.perf_counter() - started) * 1000,
        seq_scan_tables=tuple(SeqScanTable(**r) for r in seq),
        unused_indexes=tuple(UnusedIndex(**r) for r in unused),
        duplicate_indexes=tuple(
            DuplicateIndexes(
                schemaname=r["schemaname"],
                relname=r["relname"],
                indexes=tuple(r["indexes"]),
                total_bytes=int(r["total_bytes"]),
            )
            for r in dups
        ),
        cache_hit=_cache_hit(cache[0]) if cache else None,
        stale_tables=tuple(StaleTable(**r) for r in stale),
        long_queries=tuple(
            LongQuery(
                pid=int(r["pid"]),
                datname=r["datname"],
                usename=r["usename"],
                application_name=str(r["application_name"] or ""),
                wait_event_type=r["wait_event_type"],
                wait_event=r["wait_event"],
                query_age_s=float(r["query_age_s"]),
                query=one_line(redact_literals(str(r["query"] or ""))),
            )
            for r in long_q
        ),
        disabled=tuple(disabled),
    )


def _ratio(hit: float | None, read: float | None) -> tuple[float | None, int]:
    total = (hit or 0.0) + (read or 0.0)
    return ((hit or 0.0) / total if total else None), int(total)


def _cache_hit(row: dict[str, Any]) -> CacheHit:
    heap, heap_blocks = _ratio(row["heap_hit"], row["heap_read"])
    idx, idx_blocks = _ratio(row["idx_hit"], row["idx_read"])
    return CacheHit(
        heap_ratio=heap, index_ratio=idx, heap_blocks=heap_blocks, index_blocks=idx_blocks
    )
