"""The TUI's own cost: CPU of the app process and its RSS over a run, rendering a
fast-changing replay (a new snapshot on every poll) in a real pseudo-terminal at 80x24.

Target (issue 8): the dashboard costs <= 10 % of one core and its RSS stays flat.
``ARCHON_BENCH_TUI_S`` sets the measured seconds per run (default 20).
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "tui" / "demo_session.json"
WARMUP_S = 3.0


def _drain(fd: int, counter: list[int]) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            return
        if not data:
            return
        counter[0] += len(data)


def _run(refresh_s: float, seconds: float, switch_every_s: float | None) -> dict[str, float]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    cmd = [sys.executable, "-m", "tui.replay", str(FIXTURE), "--mode", "call", "--loop"]
    proc = subprocess.Popen(
        [*cmd, "--refresh", str(refresh_s)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    written = [0]
    reader = threading.Thread(target=_drain, args=(master, written), daemon=True)
    reader.start()
    try:
        ps = psutil.Process(proc.pid)
        time.sleep(WARMUP_S)
        cpu0 = ps.cpu_times()
        rss0 = ps.memory_info().rss
        bytes0 = written[0]
        start = time.perf_counter()
        next_key, key = start, 0
        rss_60 = 0
        while (now := time.perf_counter()) - start < seconds:
            if switch_every_s is not None and now >= next_key:
                os.write(master, str(key % 7 + 1).encode())
                key += 1
                next_key += switch_every_s
            if not rss_60 and now - start >= 60:
                rss_60 = ps.memory_info().rss
            time.sleep(0.05)
        wall = time.perf_counter() - start
        cpu1 = ps.cpu_times()
        rss1 = ps.memory_info().rss
        out_bytes = written[0] - bytes0
        quit_start = time.perf_counter()
        os.write(master, b"q")
        code = proc.wait(timeout=20)
        quit_s = time.perf_counter() - quit_start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    return {
        "cpu_pct": 100 * cpu / wall,
        "rss0_mib": rss0 / 2**20,
        "rss1_mib": rss1 / 2**20,
        "rss60_mib": rss_60 / 2**20,
        "out_kib_s": out_bytes / wall / 1024,
        "quit_s": quit_s,
        "exit": float(code),
        "wall": wall,
    }


def main() -> None:
    seconds = float(os.environ.get("ARCHON_BENCH_TUI_S", "20"))
    runs = (
        ("refresh 1 s, screen switch every 2 s", 1.0, 2.0),
        ("refresh 1 s, Overview only", 1.0, None),
        ("refresh 0.25 s (stress), Overview", 0.25, None),
    )
    print(f"   {seconds:.0f} s per run after {WARMUP_S:.0f} s start-up; 80x24 pty; target <= 10 %")
    for label, refresh, switch in runs:
        r = _run(refresh, seconds, switch)
        at_60 = f" (at 60 s {r['rss60_mib']:.1f})" if r["rss60_mib"] else ""
        print(
            f"   {label:<38} cpu {r['cpu_pct']:5.1f} % of a core   "
            f"rss {r['rss0_mib']:5.1f} -> {r['rss1_mib']:5.1f} MiB{at_60}   "
            f"tty {r['out_kib_s']:5.1f} KiB/s   "
            f"q exits in {r['quit_s']:.2f} s (code {r['exit']:.0f})"
        )


if __name__ == "__main__":
    main()
