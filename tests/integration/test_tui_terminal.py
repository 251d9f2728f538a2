"""The dashboard and its terminal: a real app process (the replay preview, ``run_app``) in
a real pseudo-terminal at 80x24.

SSH normally sends SIGHUP when the connection goes away, but a terminal can also vanish
without one (a pty whose other end was closed by a harness or a multiplexer, a process that
was never the session's controlling terminal). The app then used to spin on end-of-file,
its writer thread died of EIO, its UI loop blocked, and it ignored SIGTERM: it ran until
killed.
"""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "tui" / "demo_session.json"


def _start() -> tuple[subprocess.Popen[bytes], int, list[int], threading.Event]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui.replay", str(FIXTURE), "--mode", "call", "--loop"],
        stdin=slave,
        stdout=slave,
        stderr=slave,  # Textual draws on stderr
        cwd=ROOT,
        env=env,
        start_new_session=True,  # the pty is not its controlling terminal: no SIGHUP
    )
    os.close(slave)
    drawn = [0]
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            drawn[0] += len(data)

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + 30
    while drawn[0] < 2000 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert drawn[0] >= 2000, f"the dashboard drew nothing ({drawn[0]} bytes)"
    return proc, master, drawn, stop


def _exits(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_quits_when_its_terminal_goes_away_without_a_hangup() -> None:
    proc, master, _, stop = _start()
    try:
        stop.set()
        os.close(master)  # the other end is gone: reads see end-of-file, writes fail
        assert _exits(proc, 20), (
            "still running 20 s after its terminal went away "
            f"({psutil.Process(proc.pid).cpu_percent(0.5):.0f} % CPU)"
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_quits_cleanly_on_sigterm() -> None:
    proc, master, _, stop = _start()
    try:
        proc.send_signal(signal.SIGTERM)
        assert _exits(proc, 20), "SIGTERM did not end the dashboard"
        assert proc.returncode == 0
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
