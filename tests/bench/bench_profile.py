"""Profiler costs, measured side by side in one run.

- Throughput of the Archon stand-in (diag/demo, faults none: the efficient service, where
  a profiler's fixed cost weighs most) under a fixed closed-loop load (CLIENTS clients
  cycling through the UI's polling routes) with nothing attached vs py-spy (CPU at 100 Hz
  and the --idle wall recording at 20 Hz, as sessions run them) plus the 1 Hz process series;
  rounds alternate, and the ratio is the median of each pair's ratio (the machine's own
  drift cancels within a pair).
- The same ratio for a memray attach window (``--trace-python-allocators``).
- Parsing and folding 1M collapsed-stack samples (20k distinct stacks).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from diag import pgembed
from diag.demo import stack
from diag.demo.agents import HOT_PROJECT_IDS
from diag.demo.seed import Sizes
from diag.hotspots import function_stats, wall_breakdown
from probes.memray import MemrayRecorder
from probes.process import ProcessSampler
from probes.pyspy import PySpyRecorder, parse_collapsed, record_window, wall_rate
from probes.targets import Target

ROUND_S = 4.0
PAIRS = 6
MEMRAY_PAIRS = 2
CLIENTS = 4


def _routes() -> list[str]:
    project = HOT_PROJECT_IDS[0]
    return [
        "/api/projects",
        f"/api/projects/{project}/tasks",
        "/api/tasks?status=todo&per_page=20",
        "/api/knowledge-items?per_page=20",
        "/api/health",
    ]


def _throughput(base_url: str, seconds: float) -> float:
    """Requests/s of CLIENTS closed-loop clients over ``seconds``."""
    routes = _routes()
    counts = [0] * CLIENTS
    deadline = time.monotonic() + seconds

    def client(k: int) -> None:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            i = k
            while time.monotonic() < deadline:
                http.get(routes[i % len(routes)]).raise_for_status()
                counts[k] += 1
                i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return sum(counts) / seconds


def _with_pyspy(pid: int, out: Path, seconds: float, base_url: str) -> float:
    result: list[float] = []
    th = threading.Thread(target=lambda: result.append(_throughput(base_url, seconds)))
    sampler = ProcessSampler([Target(pid, "bench", (), str(pid))])
    stop = asyncio.Event()

    async def probes() -> None:
        series = asyncio.create_task(sampler.run(lambda r: None, stop))
        recs = [
            PySpyRecorder(pid, out / "c.txt", duration=seconds, mode="cpu"),
            PySpyRecorder(
                pid,
                out / "w.txt",
                duration=seconds,
                mode="wall",
                nonblocking=True,
                rate=wall_rate(100),
            ),
        ]
        # one window per round, its start-up inside the timed load: a session records
        # windows back to back, so each window's attach is part of the steady cost
        th.start()
        await asyncio.gather(*(record_window(r) for r in recs))
        stop.set()
        await series

    asyncio.run(probes())
    th.join()
    return result[0]


def _with_memray(pid: int, out: Path, seconds: float, base_url: str) -> float:
    rec = MemrayRecorder(pid, out, duration=seconds + 1)
    rec.start()
    while not rec.attach_finished():
        time.sleep(0.05)
    rps = _throughput(base_url, seconds)
    while not rec.poll():
        time.sleep(0.1)
    rec.result()
    return rps


def _pairs(
    base_url: str, pairs: int, attached: Callable[[], float]
) -> tuple[list[float], list[float]]:
    bare, with_ = [], []
    for _ in range(pairs):
        bare.append(_throughput(base_url, ROUND_S))
        with_.append(attached())
    return bare, with_


def _summary(name: str, bare: list[float], with_: list[float], target: str) -> None:
    ratios = [w / b for b, w in zip(bare, with_, strict=True)]
    print(f"   nothing attached:                    {statistics.mean(bare):8.1f} req/s  "
          f"(rounds {[round(x) for x in bare]})")  # fmt: skip
    print(f"   {name:<37}{statistics.mean(with_):8.1f} req/s  "
          f"(rounds {[round(x) for x in with_]})")  # fmt: skip
    print(f"   ratio (median of pairs):             {statistics.median(ratios):8.3f}  "
          f"{target}  pairs {[round(r, 3) for r in ratios]}")  # fmt: skip


def _fold_bench() -> tuple[float, float, int]:
    rng = random.Random(3)
    site = "/venv/lib/python3.11/site-packages"
    lines = []
    for _ in range(20_000):
        depth = rng.randint(8, 30)
        frames = [f"_run_once ({site}/../asyncio/base_events.py:1922)"]
        frames += [
            f"f{k} (/srv/app/mod{k % 40}.py:{k % 97 + 1})"
            for k in (rng.randint(0, 2000) for _ in range(depth))
        ]
        lines.append(";".join(frames) + f" {50}")
    text = "\n".join(lines)
    t0 = time.perf_counter()
    stacks = parse_collapsed(text.splitlines())
    t1 = time.perf_counter()
    function_stats(stacks, seconds=100, rate=100)
    wall_breakdown(stacks, stacks)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, len(text)


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="archon-diag-bench-profile-", dir="/tmp"))
    # its own top-level dir: the unprivileged server user cannot enter mkdtemp's 0700 dirs
    cluster = Path(tempfile.mkdtemp(prefix="archon-diag-bench-profile-pg-", dir="/tmp"))
    out = base / "out"
    out.mkdir()
    try:
        dsn = pgembed.up(cluster).dsn
        target = stack.up(
            base / "standin", faults="none", server_port=pgembed.free_port(),
            agents_port=pgembed.free_port(), dsn=dsn, sizes=Sizes.small(),
        )  # fmt: skip
        try:
            pid, url = target.pids["server"], target.server_url
            _throughput(url, 2.0)  # warm-up: pool, caches, lazy imports
            print(f"   stand-in (faults none), {CLIENTS} closed-loop clients, "
                  f"{PAIRS} alternated pairs of {ROUND_S:.0f} s")  # fmt: skip
            bare, spy = _pairs(url, PAIRS, lambda: _with_pyspy(pid, out, ROUND_S, url))
            _summary("py-spy cpu 100 Hz + wall 20 Hz + series:", bare, spy, "(target >= 0.97)")
            bare, mem = _pairs(url, MEMRAY_PAIRS, lambda: _with_memray(pid, out, ROUND_S, url))
            _summary("memray window (python allocators):", bare, mem, "(a bounded window)")
        finally:
            stack.down(base / "standin")
    finally:
        pgembed.down(cluster, purge=True)
        shutil.rmtree(base, ignore_errors=True)
    parse_s, fold_s, size = _fold_bench()
    print(f"   (2,000 distinct frames, 8-30 deep; {size / 1e6:.1f} MB of text)")
    mbs = size / parse_s / 1e6
    print(f"   parse 20k stacks / 1M samples:       {parse_s:8.3f} s  ({mbs:.0f} MB/s)")
    print(f"   fold + stats + breakdown, 1M samples: {fold_s:8.3f} s")


if __name__ == "__main__":
    main()
