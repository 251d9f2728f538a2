"""PostgreSQL probe cost: what one active-session sample and one statements snapshot cost,
and the probe's own share of the server's execution time during a busy window
(target < 1 %), measured from pg_stat_statements itself (our queries carry a marker).
Client-side times include waiting for the GIL behind the workload's threads in this
process; the server-side means are the probe's real cost on the server."""

from __future__ import annotations

import statistics
import tempfile
import threading
from pathlib import Path

import psycopg

from diag import pgembed
from probes.postgres import PROBE_MARKER, WindowCollector, fetch_texts
from probes.postgres.activity import ActivitySample
from probes.postgres.statements import StatementSnapshot, diff

WINDOW_S = 10.0
CLIENTS = 4


def _workload(dsn: str, stop: threading.Event, counter: list[int]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        i = 0
        while not stop.is_set():
            conn.execute("SELECT * FROM tasks WHERE project_id = %s", (i % 200,)).fetchall()
            conn.execute("SELECT name FROM projects WHERE id = %s", (i % 200,)).fetchall()
            i += 1
        counter.append(i * 2)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else 0.0


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="archon-diag-bench-db-", dir="/tmp"))
    try:
        info = pgembed.up(base)
        dsn = info.dsn
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE projects (id int PRIMARY KEY, name text)")
            conn.execute("CREATE TABLE tasks (id serial PRIMARY KEY, project_id int, title text)")
            conn.execute("INSERT INTO projects SELECT g, 'p' || g FROM generate_series(0, 199) g")
            conn.execute(
                "INSERT INTO tasks (project_id, title) "
                "SELECT g % 200, md5(g::text) FROM generate_series(1, 20000) g"
            )
            conn.execute("CREATE INDEX ON tasks (project_id)")
            conn.execute("ANALYZE")
            conn.execute("SELECT pg_stat_statements_reset()")

        stop = threading.Event()
        counter: list[int] = []
        threads = [
            threading.Thread(target=_workload, args=(dsn, stop, counter)) for _ in range(CLIENTS)
        ]
        collector = WindowCollector(dsn, sample_interval_s=0.2, snapshot_interval_s=1.0)
        collector.start()
        for t in threads:
            t.start()
        collector.run_for(WINDOW_S)
        stop.set()
        for t in threads:
            t.join()
        data = collector.stop()

        samples: list[ActivitySample] = list(data.samples)
        snaps: list[StatementSnapshot] = list(data.snapshots)
        window = diff(snaps[0], snaps[-1])
        with psycopg.connect(dsn, autocommit=True) as conn:
            texts = fetch_texts(conn, (s.queryid for s in window.statements))  # type: ignore[arg-type]
        ours = sum(
            s.total_exec_ms
            for s in window.statements
            if s.queryid in texts and PROBE_MARKER in texts[s.queryid].query
        )
        total = sum(s.total_exec_ms for s in window.statements)
        sample_ms = [s.cost_ms for s in samples]
        snap_ms = [s.cost_ms for s in snaps[1:]]
        print(f"   workload: {CLIENTS} clients, {sum(counter):,} statements in {WINDOW_S:.0f} s")
        print(
            f"   ASH sample (200 ms):      p50 {statistics.median(sample_ms):6.2f} ms   "
            f"p95 {_pct(sample_ms, 0.95):6.2f} ms   ({len(samples)} samples, "
            f"{len(samples[-1].sessions)} sessions)"
        )
        print(
            f"   statements snapshot:      p50 {statistics.median(snap_ms):6.2f} ms   "
            f"p95 {_pct(snap_ms, 0.95):6.2f} ms   ({len(snaps[-1].statements)} statements)"
        )
        for s in window.statements:
            text = texts[s.queryid].query if s.queryid in texts else ""
            if PROBE_MARKER in text:
                name = text.split(PROBE_MARKER, 1)[1].strip().split("\n")[0][:48]
                print(
                    f"   server side {name:<48} {s.calls:4d} calls, mean {s.mean_exec_ms:6.3f} ms"
                )
        print(
            f"   probe's server time:      {ours:8.1f} ms of {total:,.1f} ms = "
            f"{100 * ours / total if total else 0:.2f} %  (target < 1 %)"
        )
    finally:
        pgembed.down(base, purge=True)


if __name__ == "__main__":
    main()
