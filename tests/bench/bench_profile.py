"""Profiler costs, measured side by side in one run.

- Throughput of a small uvicorn app (tests/targets/asgi_app.py, ``GET /hot``) under a
  fixed closed-loop load with nothing attached vs py-spy at 100 Hz (CPU + --idle wall
  recordings, as ``profile`` runs them) plus the 1 Hz process series; rounds alternate.
- The same ratio for a memray attach window (``--trace-python-allocators``).
- Parsing and folding 1M collapsed-stack samples (20k distinct stacks).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from diag.hotspots import function_stats, wall_breakdown
from diag.pgembed import free_port
from probes.memray import MemrayRecorder
from probes.process import ProcessSampler
from probes.pyspy import PySpyRecorder, parse_collapsed, record_window
from probes.targets import Target

TARGETS = Path(__file__).parents[1] / "targets"
ROUND_S = 3.0


def _throughput(port: int, seconds: float) -> float:
    n = 0
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline:
            client.get(f"http://127.0.0.1:{port}/hot")
            n += 1
    return n / seconds


def _with_pyspy(pid: int, out: Path, seconds: float, port: int) -> float:
    result: list[float] = []
    th = threading.Thread(target=lambda: result.append(_throughput(port, seconds)))
    sampler = ProcessSampler([Target(pid, "bench", (), str(pid))])
    stop = asyncio.Event()

    async def probes() -> None:
        series = asyncio.create_task(sampler.run(lambda r: None, stop))
        recs = [
            PySpyRecorder(pid, out / "c.txt", duration=seconds, mode="cpu"),
            PySpyRecorder(pid, out / "w.txt", duration=seconds, mode="wall", nonblocking=True),
        ]
        th.start()
        await asyncio.gather(*(record_window(r) for r in recs))
        stop.set()
        await series

    asyncio.run(probes())
    th.join()
    return result[0]


def _with_memray(pid: int, out: Path, seconds: float, port: int) -> float:
    rec = MemrayRecorder(pid, out, duration=seconds + 1)
    rec.start()
    while not rec.attach_finished():
        time.sleep(0.05)
    rps = _throughput(port, seconds)
    while not rec.poll():
        time.sleep(0.1)
    rec.result()
    return rps


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
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(TARGETS), "asgi_app:app",
         "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    out = Path(tempfile.mkdtemp(prefix="archon-diag-bench-profile-"))
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        _throughput(port, 1.0)  # warm-up
        base, spy, base2, mem = [], [], [], []
        for _ in range(3):
            base.append(_throughput(port, ROUND_S))
            spy.append(_with_pyspy(server.pid, out, ROUND_S, port))
        for _ in range(2):
            base2.append(_throughput(port, ROUND_S))
            mem.append(_with_memray(server.pid, out, ROUND_S, port))
    finally:
        server.terminate()
        server.wait(10)
    b, s = statistics.mean(base), statistics.mean(spy)
    b2, m = statistics.mean(base2), statistics.mean(mem)
    rounds = [round(x) for x in base]
    print(f"   GET /hot, nothing attached:          {b:8.1f} req/s  (rounds {rounds})")
    print(f"   py-spy 100 Hz cpu+wall + series:     {s:8.1f} req/s  ratio {s / b:5.3f} (>= 0.97)")
    print(f"   nothing attached (memray rounds):    {b2:8.1f} req/s")
    print(f"   memray window (python allocators):   {m:8.1f} req/s  ratio {m / b2:5.3f}")
    parse_s, fold_s, size = _fold_bench()
    print(f"   (2,000 distinct frames, 8-30 deep; {size / 1e6:.1f} MB of text)")
    mbs = size / parse_s / 1e6
    print(f"   parse 20k stacks / 1M samples:       {parse_s:8.3f} s  ({mbs:.0f} MB/s)")
    print(f"   fold + stats + breakdown, 1M samples: {fold_s:8.3f} s")


if __name__ == "__main__":
    main()
