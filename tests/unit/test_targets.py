"""Target SPEC resolution on real (tiny) processes; supervisor following is integration."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from probes.errors import PrerequisiteError, UsageError
from probes.targets import Target, alive, is_launch_spec, launch, parse_launch, resolve


@pytest.fixture()
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time  # archon-diag-test-sleeper\nwhile 1: time.sleep(1)"]
    )
    time.sleep(0.2)
    yield proc
    proc.kill()
    proc.wait()


def test_pid(sleeper: subprocess.Popen[bytes]) -> None:
    [t] = resolve(str(sleeper.pid))
    assert isinstance(t, Target) and t.pid == sleeper.pid
    assert t.label.endswith(f"(pid {sleeper.pid})")
    assert t.to_json()["pid"] == sleeper.pid


def test_missing_pid_is_a_prerequisite_error() -> None:
    with pytest.raises(PrerequisiteError, match="no process with PID"):
        resolve("4194303")


def test_match(sleeper: subprocess.Popen[bytes]) -> None:
    found = resolve("match:archon-diag-test-sleeper")
    assert [t.pid for t in found] == [sleeper.pid]
    with pytest.raises(PrerequisiteError, match="no process command line matches"):
        resolve("match:no-such-process-anywhere-xyz")
    with pytest.raises(UsageError, match="invalid regular expression"):
        resolve("match:(")


def test_port() -> None:
    code = (
        "import socket, time\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "print(s.getsockname()[1], flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        assert [t.pid for t in resolve(f"port:{port}")] == [proc.pid]
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with pytest.raises(PrerequisiteError, match="no process listens"):
        resolve(f"port:{free}")
    with pytest.raises(UsageError):
        resolve("port:http")


def test_bad_specs_are_usage_errors() -> None:
    for spec in ("web", "preset:django", "bogus:1", "launch:python x.py"):
        with pytest.raises(UsageError):
            resolve(spec)
    with pytest.raises(UsageError, match="empty command"):
        parse_launch("launch:")


def test_preset_archon_finds_the_stand_in_by_command_line() -> None:
    # a process whose command line names the stand-in's server module
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "diag.demo.server"]
    )
    time.sleep(0.2)
    try:
        found = resolve("preset:archon")
        mine = [t for t in found if t.pid == proc.pid]
        assert mine and mine[0].role == "archon-server"
    finally:
        proc.kill()
        proc.wait()


def test_launch_and_alive() -> None:
    assert is_launch_spec("launch:python -c 1") and is_launch_spec("scalene:x.py")
    run = launch(f"launch:{sys.executable} -c 'import time; time.sleep(30)'")
    try:
        assert alive(run.target.pid)
        assert run.target.cmdline[0] == sys.executable
    finally:
        run.stop()
    assert not alive(run.target.pid)
