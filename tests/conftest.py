"""Shared fixtures: a real throwaway PostgreSQL for the whole test session."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from diag import pgembed


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pgembed.ClusterInfo]:
    """A running embedded cluster (pg_stat_statements, auto_explain, jsonlog), purged at the end.

    Lives under /tmp (not pytest's 0700 tmp dir) so the unprivileged server user can reach
    it when the tests run as root.
    """
    base = Path(tempfile.mkdtemp(prefix="archon-diag-test-pg-", dir="/tmp"))
    info = pgembed.up(base)
    try:
        yield info
    finally:
        pgembed.down(base, purge=True)


@pytest.fixture(scope="session")
def pg_dsn(pg_cluster: pgembed.ClusterInfo) -> str:
    return pg_cluster.dsn
