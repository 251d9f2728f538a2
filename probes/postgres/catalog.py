"""Catalog look-ups the analysis needs: a table and its indexes, function volatility,
where the server's jsonlog is, and whether hypopg is installed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg

from probes.postgres._common import Conn, rows


@dataclass(frozen=True)
class IndexInfo:
    name: str
    method: str  # btree, hash, gin, gist, brin, ...
    is_unique: bool
    is_valid: bool
    is_partial: bool
    columns: tuple[str | None, ...]  # key columns in order; None for an expression

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TableInfo:
    relid: int
    schemaname: str
    relname: str
    reltuples: float
    indexes: tuple[IndexInfo, ...]
    # ANALYZE's distinct values per column (pg_stats; none for columns never analysed)
    distinct: tuple[tuple[str, float], ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.schemaname}.{self.relname}"

    def distinct_values(self, column: str) -> float | None:
        """How many distinct values ``column`` holds, or None when it was never analysed."""
        for name, n in self.distinct:
            if name == column:
                return n if n >= 0 else -n * max(self.reltuples, 0.0)
        return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def table_info(conn: Conn, relname: str, schemaname: str | None = None) -> TableInfo | None:
    """A table with its indexes, or None when no such table is visible."""
    found = rows(conn, "relation_lookup", {"relname": relname, "schemaname": schemaname})
    if not found:
        return None
    rel = found[0]
    indexes = tuple(
        IndexInfo(
            name=str(r["index_name"]),
            method=str(r["method"]),
            is_unique=bool(r["is_unique"]),
            is_valid=bool(r["is_valid"]),
            is_partial=bool(r["is_partial"]),
            columns=tuple(r["columns"] or ()),
        )
        for r in rows(conn, "table_indexes", {"relid": int(rel["relid"])})
    )
    names = {"schemaname": str(rel["schemaname"]), "relname": str(rel["relname"])}
    return TableInfo(
        relid=int(rel["relid"]),
        schemaname=names["schemaname"],
        relname=names["relname"],
        reltuples=float(rel["reltuples"]),
        indexes=indexes,
        distinct=tuple(
            (str(r["column_name"]), float(r["n_distinct"]))
            for r in rows(conn, "column_stats", names)
        ),
    )


def function_volatility(conn: Conn, names: list[str]) -> dict[str, set[str]]:
    """name -> the volatilities of every function with that name ('v', 's', 'i')."""
    out: dict[str, set[str]] = {}
    for r in rows(conn, "function_volatility", {"names": sorted(set(names))}):
        out.setdefault(str(r["name"]), set()).add(str(r["volatility"]))
    return out


def jsonlog_path(conn: Conn) -> Path | None:
    """The server's current jsonlog file when this role may ask and we can read it."""
    try:
        found = rows(conn, "log_location")
    except psycopg.OperationalError:
        raise
    except psycopg.Error:
        return None
    if not found or not found[0]["logfile"]:
        return None
    path = Path(str(found[0]["logfile"]))
    if not path.is_absolute():
        path = Path(str(found[0]["data_directory"])) / path
    try:
        with path.open("rb"):
            return path
    except OSError:
        return None


def has_extension(conn: Conn, name: str) -> bool:
    return bool(rows(conn, "extension_installed", {"name": name}))
