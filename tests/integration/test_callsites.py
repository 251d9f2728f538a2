"""Call sites of a real psycopg client running an N+1 loop against the embedded
PostgreSQL: from real ``py-spy dump --locals``, matched to the statement through
pg_stat_activity (its client port owned by the target) and pg_stat_statements; and from
a real ``py-spy record`` window, matched through the text the call passes in its source."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from diag.callsites import Shape, client_calls, match_statement, profiled_calls, session_shapes
from probes import pgconn
from probes.postgres.activity import ActivitySampler
from probes.pyspy import PySpyRecorder, dump_threads, record_window

pytestmark = pytest.mark.integration
TARGET = Path(__file__).parent.parent / "targets" / "n_plus_one.py"


@dataclass
class Loop:
    proc: subprocess.Popen[str]
    qid: int  # the loop's statement
    shapes: dict[int, Shape]


@pytest.fixture()
def loop(pg_dsn: str) -> Iterator[Loop]:
    proc = subprocess.Popen(
        [sys.executable, str(TARGET), pg_dsn, "60"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with pgconn.connect(pg_dsn) as conn:
            texts = []
            deadline = time.monotonic() + 10  # another test may just have reset the stats
            while not texts and time.monotonic() < deadline:
                texts = conn.execute(
                    "SELECT queryid, query FROM pg_stat_statements "
                    "WHERE query LIKE '%%parent_id FROM generate_series%%'"
                ).fetchall()
                time.sleep(0.1)
        assert texts, "pg_stat_statements has not seen the loop's statement"
        yield Loop(proc, int(texts[0][0]), {int(q): Shape.of(str(t)) for q, t in texts})
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_call_site_of_an_n_plus_one_loop(pg_dsn: str, loop: Loop) -> None:
    ports = {c.laddr.port for c in psutil.Process(loop.proc.pid).net_connections("tcp") if c.raddr}
    sampler = ActivitySampler()
    caught = []
    with pgconn.connect(pg_dsn) as conn:
        deadline = time.monotonic() + 20
        while len(caught) < 3 and time.monotonic() < deadline:
            sample = sampler.sample(conn)
            mine = [s for s in sample.sessions if s.client_port in ports]
            assert mine, "the target's session is not in pg_stat_activity"
            live = session_shapes(mine)
            for call in client_calls(dump_threads(loop.proc.pid, with_locals=True)):
                caught.append(
                    (call, match_statement(call, live), match_statement(call, loop.shapes))
                )
            time.sleep(0.05)
    assert len(caught) >= 3, "no dump caught the loop inside psycopg in 20 s"
    for call, by_session, by_text in caught:
        assert call.site.startswith("load_children_one_by_one ("), call.site
        assert call.handler is None  # no web framework routed to it
        assert by_text == loop.qid
        assert by_session == loop.qid  # the session's query_id is the same statement


def test_call_site_from_a_recording_and_the_source(loop: Loop, tmp_path: Path) -> None:
    """A 3 s py-spy recording of the loop: its samples inside psycopg are counted for the
    statement whose text the call site passes (a module-level constant in its source)."""
    rec = PySpyRecorder(loop.proc.pid, tmp_path / "cpu.txt", duration=3, rate=100)
    window = asyncio.run(record_window(rec))
    assert window.error is None and window.stacks is not None, window.error
    events = profiled_calls([window], loop.shapes)
    assert events, "no sampled stack inside psycopg was matched to the loop's statement"
    assert {e["queryid"] for e in events} == {loop.qid}
    assert {e["site"].split(" (")[0] for e in events} == {"load_children_one_by_one"}
    assert sum(e["samples"] for e in events) >= 20
    # a statement the source does not pass is never matched
    assert not profiled_calls([window], {1: Shape.of("SELECT id FROM elsewhere WHERE a = $1")})
