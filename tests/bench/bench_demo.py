"""The Archon stand-in: seeding time at default sizes, start-up time, and each route's
median latency with every fault on against none (the clean control), side by side."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from diag import pgembed
from diag.demo import stack
from diag.demo.agents import HOT_PROJECT_IDS
from diag.demo.seed import Sizes

ROUNDS = 10


def _routes(project: str) -> list[tuple[str, str, str, dict[str, object] | None]]:
    return [
        ("health", "GET", "/api/health", None),
        ("projects", "GET", "/api/projects", None),
        ("project tasks", "GET", f"/api/projects/{project}/tasks", None),
        ("task-counts", "GET", "/api/projects/task-counts", None),
        ("tasks ?status", "GET", "/api/tasks?status=todo&per_page=50", None),
        ("tasks ?q", "GET", "/api/tasks?q=agent&per_page=20", None),
        ("knowledge-items", "GET", "/api/knowledge-items?per_page=20", None),
        ("knowledge summary", "GET", "/api/knowledge-items/summary?per_page=20", None),
        ("rag query", "POST", "/api/rag/query", {"query": "retry with backoff", "match_count": 5}),
    ]


def _medians(target: stack.DemoTarget) -> dict[str, float]:
    project = str(HOT_PROJECT_IDS[0])
    out = {}
    with httpx.Client(base_url=target.server_url, timeout=60) as http:
        for name, method, path, body in _routes(project):
            http.request(method, path, json=body)  # warm
            times = []
            for _ in range(ROUNDS):
                started = time.perf_counter()
                http.request(method, path, json=body).raise_for_status()
                times.append(time.perf_counter() - started)
            out[name] = statistics.median(times) * 1000
        etag = http.get(f"/api/projects/{project}/tasks").headers["etag"]
        times = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            http.get(f"/api/projects/{project}/tasks", headers={"If-None-Match": etag})
            times.append(time.perf_counter() - started)
        out["project tasks 304"] = statistics.median(times) * 1000
    return out


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="archon-diag-bench-demo-", dir="/tmp"))
    # its own top-level dir: the unprivileged server user cannot enter mkdtemp's 0700 dirs
    cluster = Path(tempfile.mkdtemp(prefix="archon-diag-bench-demo-pg-", dir="/tmp"))
    try:
        dsn = pgembed.up(cluster).dsn
        results: dict[str, dict[str, float]] = {}
        for spec in ("none", "all"):
            started = time.perf_counter()
            target = stack.up(
                base / spec,
                faults=spec,
                server_port=pgembed.free_port(),
                agents_port=pgembed.free_port(),
                dsn=dsn,
                sizes=Sizes(),
            )
            up_s = time.perf_counter() - started
            if target.seeded_now:
                print(f"   seed (default sizes {Sizes().to_json()}): {target.seed_seconds:6.1f} s")
            start_s = up_s - target.seed_seconds
            print(f"   up --faults {spec:<4} (after seeding): {start_s:6.1f} s")
            try:
                results[spec] = _medians(target)
            finally:
                stack.down(base / spec)
        print(f"   {'route (median of ' + str(ROUNDS) + ')':<28}{'none ms':>10}{'all ms':>10}")
        for name in results["none"]:
            print(f"   {name:<28}{results['none'][name]:>10.1f}{results['all'][name]:>10.1f}")
    finally:
        pgembed.down(cluster, purge=True)
        shutil.rmtree(base, ignore_errors=True)
