"""Real Locust subprocesses against loopback servers (127.0.0.1, free ports, short runs).

One run checks several things at once to stay inside the time budget: the live stream
(about one line a second), the shape being followed, the final totals against Locust's
own JSON, pruning, and the Archon scenario's routes and fixed names.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from diag.commands import load as load_cmd
from diag.pgembed import free_port
from probes.errors import DiagError, PrerequisiteError
from probes.loadshapes import plan
from probes.locust import (
    LoadSpec,
    LoadTick,
    LocustRun,
    locust_available,
    percentile,
    worker_command,
)
from tests.integration.load_servers import route_of, serve

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "load"
ARCHON_NAMES = {
    ("GET", "/api/projects"),
    ("GET", "/api/projects/{id}/tasks"),
    ("GET", "/api/knowledge-items/summary"),
    ("GET", "/api/projects/task-counts"),
    ("GET", "/api/health"),
    ("GET", "/api/progress/{id}"),
    ("GET", "/api/tasks?filter"),
    ("POST", "/api/tasks"),
    ("PUT", "/api/tasks/{id}"),
    ("GET", "/api/knowledge-items"),
    ("POST", "/api/rag/query"),
    ("POST", "/api/agent-chat/sessions"),
    ("POST", "/api/agent-chat/sessions/{id}/messages"),
    ("POST", "/agents/run"),
}


def run_load(argv: list[str]) -> int:
    """``archon-diag load ARGV`` the way diag.cli.main runs it (one line per DiagError)."""
    parser = argparse.ArgumentParser(prog="archon-diag load")
    load_cmd.configure(parser)
    try:
        return load_cmd.run(parser.parse_args(argv))
    except DiagError as exc:
        print(f"archon-diag load: {exc}", file=sys.stderr)
        return exc.exit_code


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def locust_json(out: Path) -> list[dict[str, Any]]:
    data = json.loads((out / "locust_stats.json").read_text())
    assert isinstance(data, list) and data, "Locust wrote no stats"
    return data


def test_archon_scenario_streams_ticks_follows_the_shape_and_matches_locust_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, jsonl = tmp_path / "out", tmp_path / "load.jsonl"
    with serve("archon") as server:
        code = run_load(
            ["--host", server.url, "--agents-host", server.url, "--users", "8",
             "--spawn-rate", "20", "--shape", "step", "--steps", "2", "--duration", "16s",
             "--prune-after", "4s", "--jsonl", str(jsonl), "--out", str(out)]
        )  # fmt: skip
        served = server.total()
        paths = list(server.paths)
    printed = capsys.readouterr()
    assert code == 0, printed.err
    records = read_jsonl(jsonl)
    ticks = [LoadTick.from_json(r) for r in records if r["type"] == "tick"]
    result = next(r for r in records if r["type"] == "result")
    assert next(r for r in records if r["type"] == "analysis")["knee"] is None

    # about one line per second, for the whole run
    assert 14 <= len(ticks) <= 19, [t.elapsed for t in ticks]
    gaps = [b.t - a.t for a, b in itertools.pairwise(ticks[:-1])]  # the last is the final
    assert 0.9 <= statistics.median(gaps) <= 1.1 and max(gaps) < 1.6, gaps
    running = [t for t in ticks if t.state == "running" and t.requests]
    assert len(running) >= 12
    for t in running:
        assert t.rps > 0 and t.p50_ms is not None and t.p95_ms is not None
        assert t.p50_ms <= t.p95_ms <= (t.p99_ms or 0) and t.avg_ms is not None
    cumulative = [t.total_requests for t in ticks]
    assert cumulative == sorted(cumulative)
    assert sum(t.requests for t in ticks) == ticks[-1].total_requests == result["total"]["requests"]

    # the user count follows the shape: 4 users, then 8
    for stage, users in (("step 1", 4), ("step 2", 8)):
        in_stage = [t for t in ticks if t.stage == stage]
        assert len(in_stage) >= 6
        assert all(t.target_users == users for t in in_stage)
        settled = in_stage[1:]
        assert sum(t.users == users for t in settled) >= len(settled) - 1, in_stage

    # final totals = Locust's own JSON (same histograms: equal, not just close)
    entries = locust_json(out)
    assert result["total"]["requests"] == sum(e["num_requests"] for e in entries)
    assert result["total"]["failures"] == sum(e["num_failures"] for e in entries) == 0
    merged: Counter[int] = Counter()
    for e in entries:
        merged.update({int(k): v for k, v in e["response_times"].items()})
    n = sum(merged.values())
    for q, key in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
        assert percentile(merged, n, q) == pytest.approx(result["total"][key], rel=0.1, abs=1)
    by_name = {(e["method"], e["name"]): e for e in entries}
    for row in result["endpoints"]:
        entry = by_name[(row["method"], row["name"])]
        assert row["requests"] == entry["num_requests"]
        hist = {int(k): v for k, v in entry["response_times"].items()}
        assert row["p95_ms"] == percentile(hist, entry["num_requests"], 0.95)
    # every request Locust counted reached the server (and nothing else did)
    assert abs(served - result["total"]["requests"]) <= 8

    # the Archon scenario: fixed names, ids discovered from the responses
    names = set(by_name)
    assert names <= ARCHON_NAMES, names - ARCHON_NAMES
    assert {("GET", "/api/projects"), ("GET", "/api/projects/{id}/tasks")} <= names
    assert {("GET", "/api/knowledge-items/summary")} <= names
    tasks_paths = [p for p in paths if route_of(p.split(" ", 1)[1]) == "/api/projects/{id}/tasks"]
    assert tasks_paths and all("/api/projects/proj-" in p for p in tasks_paths)

    # per-endpoint rows arrive every few seconds; old per-second counters were pruned
    snapshots = [r for r in records if r["type"] == "endpoints"]
    assert len(snapshots) >= 2 and all(s["rows"] for s in snapshots)
    started = int(result["started_at"])
    oldest = min(int(k) for e in entries for k in e["num_reqs_per_sec"])
    assert oldest >= started + 4, (oldest - started, "per-second counters were not pruned")

    # the terminal view: a final table with every endpoint
    assert "Aggregated" in printed.out and "GET /api/projects" in printed.out


def test_stress_finds_the_knee_of_a_server_whose_latency_rises_with_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jsonl = tmp_path / "stress.jsonl"
    # one request at a time: latency ~ users x 20 ms, throughput flat at ~50 req/s
    with serve("queue", service_ms=20) as server:
        code = run_load(
            ["--host", server.url, "--locustfile", str(FIXTURES / "hammer_locustfile.py"),
             "--users", "8", "--shape", "stress", "--steps", "4", "--duration", "12s",
             "--max-p95", "70ms", "--jsonl", str(jsonl), "--out", str(tmp_path / "out")]
        )  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.err
    records = read_jsonl(jsonl)
    stages = [r for r in records if r["type"] == "stage"]
    knee = next(r for r in records if r["type"] == "analysis")["knee"]
    assert [s["target_users"] for s in stages] == [2, 4], stages
    assert stages[0]["verdict"] == "ok" and stages[1]["verdict"] == "crossed"
    assert stages[1]["p95_ms"] > 70 >= stages[0]["p95_ms"]
    assert knee["users"] == 2 and knee["crossed_users"] == 4 and "p95" in knee["reason"]
    # the run stopped at the crossing instead of going on to 6 and 8 users
    ticks = [r for r in records if r["type"] == "tick"]
    assert max(t["target_users"] or 0 for t in ticks) == 4
    assert ticks[-1]["elapsed"] < 9
    assert "knee at 2 users" in printed.out


def test_processes_two_aggregates_both_workers_and_stops_cleanly(tmp_path: Path) -> None:
    async def scenario(url: str) -> tuple[list[LoadTick], Any, LocustRun]:
        spec = LoadSpec(
            plan=plan("load", users=4, duration_s=120, spawn_rate=10),
            host=url,
            locustfile=FIXTURES / "tiny_locustfile.py",
            processes=2,
        )
        run = LocustRun(spec, tmp_path / "out")
        ticks: list[LoadTick] = []
        async with run:
            async for tick in run.ticks():
                ticks.append(tick)
                if sum(t.state == "running" and t.requests > 0 for t in ticks) >= 5:
                    break
            result = await run.stop()  # SIGTERM well before the 120 s shape ends
        return ticks, result, run

    with serve("echo") as server:
        ticks, result, run = asyncio.run(scenario(server.url))
        served, pids = server.total(), dict(server.pids)
    assert result.stopped_early and result.exit_code == 0
    assert result.stop_reason == "stopped"
    assert not run.running
    # both worker processes sent load, and the master's stats hold all of it
    assert len(pids) == 2 and min(pids.values()) > 0.3 * max(pids.values()), pids
    assert result.total.requests == sum(e.requests for e in result.endpoints) > 100
    entries = locust_json(tmp_path / "out")
    assert result.total.requests == sum(e["num_requests"] for e in entries)
    assert 0 <= served - result.total.requests <= 8  # at most the requests in flight
    # the live stream still ticks every second in master mode, and counts the workers
    assert all(t.workers == 2 for t in ticks)
    gaps = [b.t - a.t for a, b in itertools.pairwise(ticks)]
    assert 0.9 <= statistics.median(gaps) <= 1.1
    # no tick lost or repeated across the SIGTERM: the intervals add up to the total
    timeline = [(t.elapsed, t.requests, t.total_requests) for t in result.ticks]
    assert sum(t.requests for t in result.ticks) == result.total.requests, timeline


def test_master_with_a_worker_started_by_the_documented_command(tmp_path: Path) -> None:
    async def scenario(url: str) -> tuple[list[LoadTick], Any]:
        spec = LoadSpec(
            plan=plan("load", users=3, duration_s=10, spawn_rate=10),
            host=url,
            locustfile=FIXTURES / "tiny_locustfile.py",
            expect_workers=1,
            master_port=free_port(),
        )
        run = LocustRun(spec, tmp_path / "out")
        cmd = worker_command(spec, "127.0.0.1")
        assert cmd[:3] == ["python", "-m", "locust"]
        async with run:
            worker = await asyncio.create_subprocess_exec(
                sys.executable, *cmd[1:], cwd=tmp_path,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            try:
                ticks = [t async for t in run.ticks()]
                result = await run.wait()
            finally:
                if worker.returncode is None:
                    await asyncio.wait_for(worker.wait(), 15)
        return ticks, result

    with serve("echo") as server:
        ticks, result = asyncio.run(scenario(server.url))
        served = server.total()
    assert result.stop_reason == "shape completed" and result.total.requests > 50
    assert abs(served - result.total.requests) <= 3
    running = [t for t in ticks if t.state == "running"]
    assert running and all(t.workers == 1 for t in running)
    # the worker reports every second (the plugin lowers Locust's 3 s): with 3 s reports
    # at most a third of the ticks would carry requests. A busy host delays a report now
    # and then (two of four ticks empty once), so the bar is 60 %, not "all but one".
    assert len(running) >= 6
    assert sum(t.requests > 0 for t in running[1:]) >= 0.6 * len(running[1:])


def test_refused_connections_are_counted_and_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jsonl = tmp_path / "refused.jsonl"
    code = run_load(
        ["--host", f"http://127.0.0.1:{free_port()}", "--locustfile",
         str(FIXTURES / "tiny_locustfile.py"), "--users", "2", "--duration", "3s",
         "--jsonl", str(jsonl), "--out", str(tmp_path / "out")]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert err[-1].startswith("archon-diag load: every request to http://127.0.0.1:")
    assert "refused" in err[-1] and "Traceback" not in "\n".join(err)
    result = next(r for r in read_jsonl(jsonl) if r["type"] == "result")
    assert result["total"]["requests"] > 5
    assert result["total"]["failures"] == result["total"]["requests"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def broken(:\n", "failed to start"),
        ("from locust import task\nX = 1\n", "defines no User class"),
    ],
)
def test_a_locustfile_that_does_not_load_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, expected: str
) -> None:
    bad = tmp_path / "bad_locustfile.py"
    bad.write_text(source)
    code = run_load(["--host", "http://127.0.0.1:9", "--locustfile", str(bad), "--duration", "2s"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err  # one line, no traceback
    assert expected in err[-1] and str(bad) in err[-1]


def test_locust_missing_is_a_prerequisite_error(tmp_path: Path) -> None:
    python = "/usr/bin/python3"
    if not os.path.exists(python) or locust_available(python):
        pytest.skip(f"needs an interpreter without locust ({python} has it or is absent)")
    spec = LoadSpec(plan=plan("load", users=1, duration_s=1), python=python)
    with pytest.raises(PrerequisiteError, match="locust is not installed"):
        asyncio.run(LocustRun(spec, tmp_path).start())
