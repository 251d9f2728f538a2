"""Pause, resume and change the users of a running Locust (the control channel).

Real Locust subprocesses against a loopback echo server (127.0.0.1, free port), driven the
way the live TUI drives them: ``set_users``, ``pause``, ``resume``, ``follow_plan``, then
``stop``. The same scenario runs on a local runner and with ``--processes 2`` (where the
master runs the shape and the workers only follow it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from probes.errors import UsageError
from probes.loadshapes import plan
from probes.locust import LoadControl, LoadSpec, LoadTick, LocustRun
from tests.integration.load_servers import serve

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "load"


class Watch:
    """Every tick of a run, collected in the background, with a wait-for-condition."""

    def __init__(self, run: LocustRun) -> None:
        self.ticks: list[LoadTick] = []
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._collect(run))

    async def _collect(self, run: LocustRun) -> None:
        async for tick in run.ticks():
            self.ticks.append(tick)
            self.changed.set()

    async def until(self, ok: Callable[[LoadTick], bool], within: float, what: str) -> LoadTick:
        """The first tick from now on that satisfies ``ok`` (fail after ``within`` s)."""
        seen = len(self.ticks)
        deadline = time.monotonic() + within
        while True:
            for tick in self.ticks[seen:]:
                if ok(tick):
                    return tick
            seen = len(self.ticks)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no tick with {what} within {within}s: {self.ticks[-6:]}")
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    async def next_ticks(self, n: int, within: float) -> list[LoadTick]:
        start = len(self.ticks)
        deadline = time.monotonic() + within
        while len(self.ticks) < start + n:
            assert time.monotonic() < deadline, f"fewer than {n} ticks in {within}s"
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), within)
        return self.ticks[start : start + n]


async def timed(call: Any) -> tuple[LoadControl, float]:
    started = time.monotonic()
    ack = await call
    return ack, time.monotonic() - started


@pytest.mark.parametrize("processes", [None, 2], ids=["local", "processes2"])
def test_set_users_pause_resume_and_stop_a_running_load(
    tmp_path: Path, processes: int | None
) -> None:
    spec = LoadSpec(
        plan=plan("load", users=4, duration_s=120, spawn_rate=20),
        host="",  # set below, once the server has a port
        locustfile=FIXTURES / "tiny_locustfile.py",
        processes=processes,
    )

    async def scenario(url: str, served: Callable[[], int]) -> dict[str, Any]:
        run = LocustRun(LoadSpec(**{**spec.__dict__, "host": url}), tmp_path / "out")
        notes: dict[str, Any] = {"acks": [], "latency": []}
        with pytest.raises(UsageError, match="not running yet"):
            await run.pause()
        async with run:
            watch = Watch(run)
            await watch.until(lambda t: t.users == 4 and t.requests > 0, 15, "4 users busy")
            with pytest.raises(UsageError, match="whole number"):
                await run.set_users(-1)

            # set_users(2): the answer comes at once, the users follow within seconds
            ack, took = await timed(run.set_users(2))
            notes["acks"].append(ack)
            notes["latency"].append(took)
            assert ack.ok and ack.mode == "manual" and ack.users == 2 and ack.target_users == 2
            await watch.until(lambda t: t.users == 2 and t.mode == "manual", 5, "2 users")
            held = await watch.next_ticks(2, 5)
            assert all(t.users == 2 and t.target_users == 2 and t.requests > 0 for t in held)

            # pause: 0 users, no requests reach the server
            ack, took = await timed(run.pause())
            notes["acks"].append(ack)
            notes["latency"].append(took)
            assert ack.mode == "paused" and ack.target_users == 0 and ack.users == 2
            await watch.until(lambda t: t.users == 0 and t.mode == "paused", 5, "paused")
            await watch.next_ticks(1, 5)  # a whole interval after the users stopped
            before = served()
            quiet = await watch.next_ticks(2, 5)
            notes["paused_ticks"] = quiet
            notes["served_while_paused"] = served() - before
            assert all(t.state != "stopped" for t in quiet)

            # resume: back to the last override (2 users), requests flow again
            ack, took = await timed(run.resume())
            notes["acks"].append(ack)
            notes["latency"].append(took)
            assert ack.mode == "manual" and ack.target_users == 2
            await watch.until(lambda t: t.users == 2 and t.requests > 0, 5, "resumed")

            # follow_plan: the shape's 4 users again
            ack, took = await timed(run.follow_plan())
            notes["acks"].append(ack)
            notes["latency"].append(took)
            assert ack.mode == "plan" and ack.target_users == 4 and ack.users is None
            await watch.until(lambda t: t.users == 4 and t.mode == "plan", 5, "back to plan")

            result = await run.stop()
            await watch.task
        with pytest.raises(UsageError, match="not running any more"):
            await run.set_users(3)
        notes.update(result=result, ticks=watch.ticks, controls=list(run.controls))
        return notes

    with serve("echo") as server:
        notes = asyncio.run(scenario(server.url, server.total))
        served_total = server.total()

    # every command was answered promptly (the shape applies it on its next tick)
    assert max(notes["latency"]) < 1.0, notes["latency"]
    assert [a.cmd for a in notes["controls"]] == ["users", "pause", "resume", "plan"]
    assert [a.seq for a in notes["controls"]] == [1, 2, 3, 4]
    # paused: nothing measured and nothing served for two whole seconds
    for t in notes["paused_ticks"]:
        assert t.users == 0 and t.requests == 0 and t.rps == 0 and t.mode == "paused", t
    assert notes["served_while_paused"] == 0
    # stop: clean final stats, the ticks add up to Locust's own totals
    result = notes["result"]
    assert result.stopped_early and result.stop_reason == "stopped" and result.exit_code == 0
    assert result.total.requests == sum(t.requests for t in result.ticks) > 50
    assert result.total.failures == 0
    assert 0 <= served_total - result.total.requests <= 8  # at most the requests in flight
    assert {t.mode for t in result.ticks} == {"plan", "manual", "paused"}
    # the stage ran partly under manual control: flagged, no verdict against any limits
    [stage] = result.stages
    assert stage.manual and stage.verdict is None and stage.reason and "manual" in stage.reason
    if processes:  # the master counts both workers until the stop disconnects them
        live = [t for t in notes["ticks"] if t.state in ("spawning", "running")]
        assert live and all(t.workers == 2 for t in live), [t.workers for t in live]
