"""The load control channel on the diag side: records, the command line, and the protocol
against a stand-in ``locust`` (a real subprocess that speaks the plugin's pipe protocol, so
no Locust run is needed to check timeouts, refusals and a Locust that goes away)."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import pytest

from probes.errors import PrerequisiteError, UsageError
from probes.loadshapes import plan
from probes.locust import (
    LoadControl,
    LoadSpec,
    LoadTick,
    LocustRun,
    StageSummary,
    build_command,
    parse_line,
)

SPEC = LoadSpec(plan=plan("load", users=3, duration_s=5), host="http://127.0.0.1:9")

# answers each command the way the plugin does (or not, depending on FAKE_LOCUST_MODE)
FAKE_LOCUST = textwrap.dedent(
    """
    import json, os, select, sys, time
    args = sys.argv[1:]
    fd = int(args[args.index("--diag-fd") + 1])
    cfd = int(args[args.index("--diag-control-fd") + 1])
    mode = os.environ.get("FAKE_LOCUST_MODE", "answer")
    t0 = time.time()
    def emit(record):
        os.write(fd, (json.dumps(record) + "\\n").encode())
    emit({"type": "hello", "t": t0, "pid": os.getpid(), "control": mode != "nocontrol"})
    buf = b""
    while time.time() < t0 + 20:
        if not select.select([cfd], [], [], 0.2)[0]:
            continue
        chunk = os.read(cfd, 4096)
        if not chunk:
            break
        buf += chunk
        while b"\\n" in buf:
            line, buf = buf.split(b"\\n", 1)
            cmd = json.loads(line)
            if mode == "silent":
                continue
            if mode == "exit":
                sys.exit(0)
            ok = mode == "answer"
            emit({"type": "control", "t": time.time(), "elapsed": time.time() - t0,
                  "seq": cmd["seq"], "cmd": cmd["cmd"], "ok": ok,
                  "error": None if ok else "the load is ending (shape completed)",
                  "mode": "manual" if cmd["cmd"] == "users" else "paused",
                  "users": cmd.get("users"), "target_users": cmd.get("users", 0)})
    """
)


@pytest.fixture
def fake_locust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    package = tmp_path / "fake" / "locust"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(FAKE_LOCUST)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "fake"))
    return tmp_path / "out"


def test_records_round_trip_and_old_lines_still_parse() -> None:
    tick = LoadTick(1.0, 1.0, "running", 2, 2, "hold", 0, None, 1.0, 10, 0, 10.0, 0.0,
                    5, 9, 9, 5.0, 10, 0, 0, "manual")  # fmt: skip
    assert LoadTick.from_json(tick.to_json()) == tick
    old = {k: v for k, v in tick.to_json().items() if k != "mode"}  # before the channel
    assert LoadTick.from_json(old).mode == "plan"
    line = json.dumps(
        {"type": "control", "t": 2.0, "elapsed": 1.0, "seq": 3, "cmd": "pause", "ok": True,
         "error": None, "mode": "paused", "users": 2, "target_users": 0}
    )  # fmt: skip
    ack = parse_line(line)
    assert isinstance(ack, LoadControl) and ack.mode == "paused" and ack.users == 2
    assert LoadControl.from_json(ack.to_json()) == ack and ack.to_json()["type"] == "control"
    stage = {"index": 0, "name": "hold", "target_users": 2, "start_elapsed": 0.0,
             "end_elapsed": 5.0, "window_s": 5.0, "requests": 9, "failures": 0,
             "error_rate": 0.0, "rps": 1.8, "p50_ms": 3, "p95_ms": 5, "p99_ms": 5,
             "users": 2, "partial": False, "verdict": None, "reason": None}  # fmt: skip
    assert StageSummary.from_json(stage).manual is False
    assert StageSummary.from_json({**stage, "manual": True}).manual is True


def test_command_line_passes_the_control_fd_only_when_given() -> None:
    cmd = build_command(SPEC, 7, Path("/o/s"), 9)
    assert cmd[cmd.index("--diag-control-fd") + 1] == "9"
    assert "--diag-control-fd" not in build_command(SPEC, 7, Path("/o/s"))


def test_bad_input_and_no_run_are_one_line_usage_errors(tmp_path: Path) -> None:
    run = LocustRun(SPEC, tmp_path)
    for bad in (-1, True, 2.5):
        with pytest.raises(UsageError, match="whole number >= 0"):
            asyncio.run(run.set_users(bad))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="not running yet"):
        asyncio.run(run.pause())


def test_commands_are_answered_refused_or_time_out(
    fake_locust: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def session(mode: str) -> list[object]:
        monkeypatch.setenv("FAKE_LOCUST_MODE", mode)
        run = LocustRun(SPEC, fake_locust / mode)
        outcomes: list[object] = []
        async with run:
            for call in (run.set_users(2), run.pause()):
                try:
                    outcomes.append(await asyncio.wait_for(call, 3))
                except (UsageError, PrerequisiteError) as exc:
                    outcomes.append(exc)
        return outcomes

    users, paused = asyncio.run(session("answer"))
    assert isinstance(users, LoadControl) and users.ok and users.target_users == 2
    assert isinstance(paused, LoadControl) and paused.mode == "paused" and paused.seq == 2

    refused = asyncio.run(session("refuse"))
    assert all(isinstance(e, UsageError) for e in refused)
    assert str(refused[1]) == "cannot pause the load: the load is ending (shape completed)"

    gone = asyncio.run(session("exit"))
    assert isinstance(gone[0], UsageError), gone
    assert "ended" in str(gone[0]) and "not running any more" in str(gone[1])

    no_channel = asyncio.run(session("nocontrol"))
    assert all("no control channel" in str(e) for e in no_channel)


def test_a_locust_that_never_answers_times_out_with_one_line(
    fake_locust: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_LOCUST_MODE", "silent")

    async def session() -> Exception:
        async with LocustRun(SPEC, fake_locust) as run:
            with pytest.raises(PrerequisiteError) as info:
                await run.resume(timeout=0.3)
            return info.value

    error = asyncio.run(session())
    assert str(error).startswith("locust did not answer 'resume' within 0.3s (log: ")
