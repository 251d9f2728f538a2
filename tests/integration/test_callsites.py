"""Call sites from real ``py-spy dump --locals`` of a real psycopg client running an N+1
loop against the embedded PostgreSQL, matched to the statement through
pg_stat_activity (its client port owned by the target) and pg_stat_statements."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from diag.callsites import Shape, client_calls, match_statement, session_shapes
from probes import pgconn
from probes.postgres.activity import ActivitySampler
from probes.pyspy import dump_threads

pytestmark = pytest.mark.integration
TARGET = Path(__file__).parent.parent / "targets" / "n_plus_one.py"


def test_call_site_of_an_n_plus_one_loop(pg_dsn: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(TARGET), pg_dsn, "60"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        ports = {c.laddr.port for c in psutil.Process(proc.pid).net_connections("tcp") if c.raddr}
        sampler = ActivitySampler()
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
            loop_qid = int(texts[0][0])
            shapes = {int(q): Shape.of(str(t)) for q, t in texts}
            caught = []
            deadline = time.monotonic() + 20
            while len(caught) < 3 and time.monotonic() < deadline:
                sample = sampler.sample(conn)
                mine = [s for s in sample.sessions if s.client_port in ports]
                assert mine, "the target's session is not in pg_stat_activity"
                live = session_shapes(mine)
                for call in client_calls(dump_threads(proc.pid, with_locals=True)):
                    caught.append(
                        (call, match_statement(call, live), match_statement(call, shapes))
                    )
                time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert len(caught) >= 3, "no dump caught the loop inside psycopg in 20 s"
    for call, by_session, by_text in caught:
        assert call.site.startswith("load_children_one_by_one ("), call.site
        assert call.handler is None  # no web framework routed to it
        assert by_text == loop_qid
        assert by_session == loop_qid  # the session's query_id is the same statement
