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


# --- the Archon stand-in (diag/demo, issue 3) ---------------------------------------------
from collections.abc import Callable  # noqa: E402

from diag.demo.stack import DemoTarget  # noqa: E402


@pytest.fixture(scope="session")
def demo_target_factory(
    pg_cluster: pgembed.ClusterInfo,
) -> Iterator[Callable[[str], DemoTarget]]:
    """``get(faults)`` -> a running Archon stand-in (diag.demo) on ``pg_cluster``.

    One stand-in per distinct fault set per session, each in its own database with the
    small seed (a few seconds), on free ports, stopped at the end of the session. The LLM
    runs at real speed with a 30 % rate of 429s, so retries happen in a handful of jobs.
    """
    import hashlib
    import shutil

    from diag.demo import stack
    from diag.demo.faults import parse_faults, to_spec
    from diag.demo.seed import Sizes

    started: dict[str, DemoTarget] = {}
    dirs: list[Path] = []

    def get(faults: str = "all") -> DemoTarget:
        spec = to_spec(parse_faults(faults))
        if spec not in started:
            base = Path(tempfile.mkdtemp(prefix="archon-diag-test-demo-", dir="/tmp"))
            dirs.append(base)
            started[spec] = stack.up(
                base,
                faults=spec,
                server_port=pgembed.free_port(),
                agents_port=pgembed.free_port(),
                dsn=pg_cluster.dsn,
                sizes=Sizes.small(),
                dbname="archon_test_" + hashlib.md5(spec.encode()).hexdigest()[:10],
                workers=3,
                llm_429_rate=0.3,
            )
        return started[spec]

    try:
        yield get
    finally:
        for base in dirs:
            stack.down(base)
            shutil.rmtree(base, ignore_errors=True)
