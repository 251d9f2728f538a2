"""The diag process's own cost while the TUI shows a running demo (issue 8): CPU of the
``archon-diag demo`` process (its UI and session threads; not the stand-in, Locust or the
profilers, which are separate processes) and its RSS after 1 minute against at the end,
in a real 80x24 pseudo-terminal. Its analysis worker (``diag.liveworker``, a child the
live view's passes run in) is counted beside it: its CPU, its RSS, and how many there were.

Targets: <= 10 % of one core; RSS flat between minute 1 and the end.
``ARCHON_BENCH_LIVE_MIN`` sets the run's minutes (default 10, as the issue asks; 2 is a
quick look).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

import psutil

from tests.bench.bench_tui import _drain

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    minutes = float(os.environ.get("ARCHON_BENCH_LIVE_MIN", "10"))
    # its own stand-in and cluster (seeded once per directory), never a running one
    out = Path(tempfile.mkdtemp(prefix="archon-diag-bench-live-", dir="/var/tmp"))
    out.chmod(0o755)  # the unprivileged PostgreSQL user must reach the cluster inside
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color"}
    cmd = [sys.executable, "-m", "diag", "demo", "--warmup", "10s",
           "--duration", f"{minutes * 60:.0f}s", "--out", str(out / "bundle"),
           "--dir", str(out / "standin")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env,
                            start_new_session=True)  # fmt: skip
    os.close(slave)
    written = [0]
    threading.Thread(target=_drain, args=(master, written), daemon=True).start()
    ps = psutil.Process(proc.pid)
    # wait for the session to start measuring (the stand-in may need seeding first)
    deadline = time.monotonic() + 300
    manifest = out / "bundle" / "manifest.json"
    while not manifest.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(1)
    start = time.monotonic()
    cpu0 = sum(ps.cpu_times()[:2])
    workers: dict[int, float] = {}  # analysis worker pid -> its CPU when last seen
    worker_rss = 0
    rss = []
    per_minute: list[tuple[float, float]] = []  # (diag, worker) RSS at each minute, MiB
    while time.monotonic() - start < minutes * 60 and proc.poll() is None:
        time.sleep(1)  # often enough to see each worker's CPU to within a second
        with contextlib.suppress(psutil.Error):
            worker_rss = 0
            for child in ps.children():
                with contextlib.suppress(psutil.Error):
                    if "diag.liveworker" in child.cmdline():
                        workers[child.pid] = sum(child.cpu_times()[:2])
                        worker_rss += child.memory_info().rss
        rss.append(ps.memory_info().rss)
        if time.monotonic() - start >= 60 * (len(per_minute) + 1):
            per_minute.append((rss[-1] / 2**20, worker_rss / 2**20))
    elapsed = time.monotonic() - start
    cpu = (sum(ps.cpu_times()[:2]) - cpu0) / elapsed * 100
    worker_cpu = sum(workers.values()) / elapsed * 100
    os.write(master, b"q")
    try:
        proc.wait(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
    print(
        f"   live demo under the TUI for {elapsed / 60:.1f} min (80x24, {written[0]} bytes drawn)"
    )
    print(f"   diag process CPU:          {cpu:6.1f} % of one core   (target <= 10 %)")
    print(f"   + its analysis worker:     {worker_cpu:6.1f} %   ({len(workers)} started)")
    print(f"   together:                  {cpu + worker_cpu:6.1f} %")
    if len(per_minute) >= 2:
        (d1, w1), (dn, wn) = per_minute[0], per_minute[-1]
        print(f"   diag process RSS 1 min → end: {d1:6.1f} → {dn:6.1f} MiB   (ratio {dn / d1:.2f})")
        print(
            f"   with its worker:              {d1 + w1:6.1f} → {dn + wn:6.1f} MiB   "
            f"(ratio {(dn + wn) / (d1 + w1):.2f})"
        )
    print("   diag RSS by minute (MiB):   " + " ".join(f"{d:.0f}" for d, _ in per_minute))
    print("   worker RSS by minute (MiB): " + " ".join(f"{w:.0f}" for _, w in per_minute))
    half = [d for d, _ in per_minute[len(per_minute) // 2 - 1 :]] if len(per_minute) >= 4 else []
    if half:  # after the live view's buffers fill and the memray window
        slope = (half[-1] - half[0]) / (len(half) - 1)
        print(f"   diag RSS growth, 2nd half:  {slope:6.2f} MiB/min  (flat: ~0)")
    print(f"   exit code after q: {proc.returncode}")
    subprocess.run([sys.executable, "-m", "diag", "demo-target", "down", "--dir",
                    str(out / "standin")], capture_output=True, check=False)  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
