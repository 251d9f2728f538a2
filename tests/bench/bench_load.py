"""Locust with archon-diag's live-stats plugin against plain ``locust --headless``.

Same users, same trivial loopback endpoint (a minimal asyncio HTTP server in its own
process, so Locust is the bottleneck), runs alternated plain / plugin. Requests/s are read
the same way for both: from Locust's own ``--json-file`` per-second counters over the
steady part of each run. Target: plugin / plain >= 0.95. Also prints the live-line cadence.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from probes.loadshapes import plan
from probes.locust import LoadSpec, LocustRun, free_port

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "tests" / "fixtures" / "load" / "bench_locustfile.py"
USERS = 10
SECONDS = 8
ROUNDS = 3

_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def serve(port: int) -> None:
    """A keep-alive HTTP/1.1 server that answers every GET with "ok" (run in a child)."""

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            n = self.buf.count(b"\r\n\r\n")
            if n:
                self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4 :]
                self.transport.write(_RESPONSE * n)  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Proto, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def steady_rps(stats_json: Path) -> float:
    """Mean requests/s over the full seconds of a run, first and last second left out."""
    per_sec: dict[int, int] = {}
    for entry in json.loads(stats_json.read_text()):
        for sec, n in entry["num_reqs_per_sec"].items():
            per_sec[int(sec)] = per_sec.get(int(sec), 0) + int(n)
    secs = sorted(per_sec)[1:-1]
    return statistics.mean(per_sec[s] for s in secs) if secs else 0.0


def run_plain(url: str, out: Path) -> float:
    cmd = [
        sys.executable, "-m", "locust", "--headless", "-f", str(LOCUSTFILE), "--host", url,
        "-u", str(USERS), "-r", str(USERS), "-t", f"{SECONDS}s", "--only-summary",
        "--json-file", str(out / "plain"), "--exit-code-on-error", "0",
    ]  # fmt: skip
    subprocess.run(cmd, cwd=out, capture_output=True, check=True, timeout=SECONDS + 60)
    return steady_rps(out / "plain.json")


def run_plugin(url: str, out: Path) -> tuple[float, list[float]]:
    spec = LoadSpec(
        plan=plan("load", users=USERS, duration_s=SECONDS, spawn_rate=USERS),
        host=url,
        locustfile=LOCUSTFILE,
    )
    run = LocustRun(spec, out / "plugin")

    async def go() -> list[float]:
        stamps: list[float] = []
        async with run:
            async for tick in run.ticks():
                stamps.append(tick.t)
            await run.wait()
        return stamps

    stamps = asyncio.run(go())
    gaps = [b - a for a, b in itertools.pairwise(stamps[:-1])]  # the last tick is the final one
    return steady_rps(out / "plugin" / "locust_stats.json"), gaps


def main() -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", f"from tests.bench.bench_load import serve; serve({port})"],
        cwd=ROOT,
    )
    time.sleep(0.5)
    url = f"http://127.0.0.1:{port}"
    plain: list[float] = []
    plugin: list[float] = []
    gaps: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="archon-diag-bench-load-") as tmp:
            for i in range(ROUNDS):
                for kind in ("plain", "plugin") if i % 2 == 0 else ("plugin", "plain"):
                    out = Path(tmp) / f"{kind}{i}"
                    out.mkdir()
                    if kind == "plain":
                        plain.append(run_plain(url, out))
                    else:
                        rps, g = run_plugin(url, out)
                        plugin.append(rps)
                        gaps += g
    finally:
        server.terminate()
        server.wait(timeout=10)
    a, b = statistics.median(plain), statistics.median(plugin)
    print(f"   {USERS} users, {SECONDS}s runs, {ROUNDS} rounds alternated, one Locust process")
    runs_a = ", ".join(f"{x:.0f}" for x in plain)
    runs_b = ", ".join(f"{x:.0f}" for x in plugin)
    print(f"   plain locust --headless : {a:8.0f} req/s  (runs: {runs_a})")
    print(f"   with archon-diag plugin : {b:8.0f} req/s  (runs: {runs_b})")
    print(f"   ratio plugin/plain      : {b / a:8.3f}  (target >= 0.95)")
    pairs = [y / x for x, y in zip(plain, plugin, strict=True) if x > 0]
    print(f"   per-round ratios        : {', '.join(f'{r:.3f}' for r in pairs)}")
    if gaps:
        print(
            f"   live line cadence       : median {statistics.median(gaps):.3f}s, "
            f"min {min(gaps):.3f}s, max {max(gaps):.3f}s over {len(gaps)} gaps"
        )


if __name__ == "__main__":
    main()
