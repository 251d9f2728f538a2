"""Profiler costs, measured side by side in one run.

- Throughput of the Archon stand-in (diag/demo, faults none: the efficient service, where
  a profiler's fixed cost weighs most) under one steady closed-loop load (CLIENTS clients
  cycling through the UI's polling routes, in a process of their own as Locust is, so the
  probes' own work never takes the load's GIL), in alternating windows: nothing attached,
  then py-spy (CPU at 100 Hz and the --idle wall recording at 20 Hz, as sessions run them)
  plus the 1 Hz process series, and so on. Both CPU modes: non-blocking (the default)
  and --blocking (every thread paused for each sample). Each attached window's throughput is
  divided by the mean of its two neighbours' and the median of those ratios is printed.
- The same ratio for a memray attach window (``--trace-python-allocators``).
- Parsing and folding 1M collapsed-stack samples (20k distinct stacks).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

from diag import pgembed
from diag.demo import stack
from diag.demo.agents import HOT_PROJECT_IDS
from diag.demo.seed import Sizes
from diag.hotspots import function_stats, wall_breakdown
from probes.memray import MemrayRecorder
from probes.process import ProcessSampler
from probes.pyspy import PySpyRecorder, parse_collapsed, record_window, wall_rate
from probes.targets import Target

ROOT = Path(__file__).resolve().parents[2]
WINDOW_S = 5.0  # as sessions record them
WINDOWS = 12
MEMRAY_WINDOWS = 2
WARM_S = 3.0
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


def _clients(base_url: str, stop: threading.Event, done: list[float]) -> None:
    """CLIENTS closed-loop clients until ``stop``; each completion's monotonic time (the
    clock is system-wide: the bench process compares it with its own windows)."""
    routes = _routes()

    def client(k: int) -> None:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            i = k
            while not stop.is_set():
                http.get(routes[i % len(routes)]).raise_for_status()
                done.append(time.monotonic())
                i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


class _LoadWorker:
    """The closed-loop clients in a process of their own, as Locust is (the probes' work
    here never takes the load's GIL): a steady load from ``start()`` to ``stop()``."""

    def __init__(self, base_url: str) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.bench_profile", "--load-worker", base_url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip

    def _send(self, word: str) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(word + "\n")
        self._proc.stdin.flush()

    def start(self) -> None:
        self._send("start")

    def stop(self) -> list[float]:
        """The completion times since ``start()``."""
        self._send("stop")
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the load worker died")
        times: list[float] = json.loads(line)
        return times

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(10)


def _load_worker(base_url: str) -> None:
    stop = threading.Event()
    done: list[float] = []
    worker: threading.Thread | None = None
    for line in sys.stdin:
        if line.strip() == "start":
            stop.clear()
            done = []
            worker = threading.Thread(target=_clients, args=(base_url, stop, done))
            worker.start()
        elif line.strip() == "stop" and worker is not None:
            stop.set()
            worker.join()
            print(json.dumps(done), flush=True)


def _pin(server_pid: int, others: list[int]) -> str:
    """The server on a core of its own, as a service on a real host has one; PostgreSQL,
    the agents, the load and the probes (children of this process) on the rest. On two
    saturated shared cores the server otherwise loses to whatever else runs, and rounds
    differed by ±15 % with nothing attached, more than the effect measured."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return "not pinned (one core)"
    rest = set(cores[1:])
    pids = [os.getpid()]
    for pid in others:
        with contextlib.suppress(psutil.Error):
            pids += [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    for pid in pids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, rest)  # children forked later inherit it
    os.sched_setaffinity(server_pid, {cores[0]})
    return f"server on core {cores[0]}, the rest on {','.join(map(str, sorted(rest)))}"


Span = tuple[float, float]  # monotonic start, end


def _pyspy_window(pid: int, out: Path, *, nonblocking: bool) -> Span:
    """One window as a session records it: py-spy CPU at 100 Hz and the --idle wall
    recording at 20 Hz side by side, the 1 Hz process series alongside; the span runs
    from py-spy's start to its exit (its attach and write-out are part of the cost)."""
    sampler = ProcessSampler([Target(pid, "bench", (), str(pid))])
    stop = asyncio.Event()

    async def probes() -> Span:
        started = time.monotonic()
        series = asyncio.create_task(sampler.run(lambda r: None, stop))
        recs = [
            PySpyRecorder(pid, out / "c.txt", duration=WINDOW_S, mode="cpu",
                          nonblocking=nonblocking),
            PySpyRecorder(pid, out / "w.txt", duration=WINDOW_S, mode="wall",
                          nonblocking=True, rate=wall_rate(100)),
        ]  # fmt: skip
        await asyncio.gather(*(record_window(r) for r in recs))
        ended = time.monotonic()
        stop.set()
        await series
        return started, ended

    return asyncio.run(probes())


def _memray_window(pid: int, out: Path) -> Span:
    """A memray attach window; the span is while its tracker is in the target."""
    rec = MemrayRecorder(pid, out, duration=WINDOW_S + 1)
    rec.start()
    while not rec.attach_finished():
        time.sleep(0.05)
    started = time.monotonic()
    while not rec.poll():
        time.sleep(0.1)
    ended = time.monotonic()
    rec.result()
    return started, ended


def _alternate(load: _LoadWorker, windows: int, attach: Callable[[], Span]) -> list[float]:
    """Under one steady load: a window with nothing attached, then ``windows`` times an
    attached window and one more with nothing, each as long as the attached one before
    it. Each attached window's throughput over the mean of its two neighbours' is one
    ratio (the load never pauses, and the machine's drift cancels between neighbours)."""
    load.start()
    time.sleep(WARM_S)
    spans: list[tuple[bool, Span]] = []
    t = time.monotonic()
    time.sleep(WINDOW_S)
    spans.append((False, (t, time.monotonic())))
    for _ in range(windows):
        on = attach()
        spans.append((True, on))
        t = time.monotonic()
        time.sleep(on[1] - on[0])
        spans.append((False, (t, time.monotonic())))
    done = load.stop()

    def rate(span: Span) -> float:
        return sum(span[0] <= x < span[1] for x in done) / (span[1] - span[0])

    rates = [rate(span) for _, span in spans]
    return [rates[i] / ((rates[i - 1] + rates[i + 1]) / 2) for i in range(1, len(rates), 2)]


def _summary(name: str, ratios: list[float], target: str) -> None:
    print(f"   {name:<44} ratio {statistics.median(ratios):6.3f}  {target}")
    print(f"   {'':<44} (each window: {[round(r, 3) for r in ratios]})")


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
        info = pgembed.up(cluster)
        dsn = info.dsn
        target = stack.up(
            base / "standin", faults="none", server_port=pgembed.free_port(),
            agents_port=pgembed.free_port(), dsn=dsn, sizes=Sizes.small(),
        )  # fmt: skip
        pid = target.pids["server"]
        pinned = _pin(pid, [p for p in (info.pid, target.pids["agents"]) if p])
        load = _LoadWorker(target.server_url)
        try:
            print(f"   stand-in (faults none) under a steady load of {CLIENTS} closed-loop "
                  f"clients in their own process; {pinned}")  # fmt: skip
            print(f"   {WINDOWS} attached windows of {WINDOW_S:.0f} s per variant, each "
                  "between two as long with nothing attached")  # fmt: skip
            ratios = _alternate(load, WINDOWS, lambda: _pyspy_window(pid, out, nonblocking=True))
            _summary("py-spy 100 Hz (non-blocking, the default) + wall + series:", ratios,
                     "(target >= 0.97)")  # fmt: skip
            ratios = _alternate(load, WINDOWS, lambda: _pyspy_window(pid, out, nonblocking=False))
            _summary("the same, --blocking:", ratios, "(pauses every thread)")
            ratios = _alternate(load, MEMRAY_WINDOWS, lambda: _memray_window(pid, out))
            _summary("memray window (python allocators):", ratios, "(a bounded window)")
        finally:
            load.close()
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
    if sys.argv[1:2] == ["--load-worker"]:
        _load_worker(sys.argv[2])
    else:
        main()
