"""The Session: one asyncio orchestrator that runs the load and every probe together
through a warm-up and a measured window, writing the run bundle as it goes.

Probes are ``ProbeTask``s (adapters in ``diag.session_probes``): each starts its
subprocesses or connections, loops until the session stops, and emits records to the
bundle. Phases are recorded in the ``session`` stream so the analysis knows the measured
window. The report is built afterwards from the bundle alone (``diag.analysis``), and the
live view (``LiveSession``) shows the same analysis, recomputed every few seconds.

Must not: analyse data here, import ``tui``, or block the event loop (CPU-heavy work goes
to threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from diag.bundle import Bundle, BundleWriter
from diag.config import RunConfig
from diag.live import (
    Action,
    EndpointRow,
    LiveSnapshot,
    LoadPoint,
    ProbeHealth,
    ProcessPoint,
    ProcessView,
)
from diag.liveview import with_probes
from diag.liveworker import AnalysisWorker, WorkerError
from diag.units import format_duration
from probes.targets import Target


@dataclass
class SessionContext:
    """What every probe task can see and use."""

    config: RunConfig
    bundle: BundleWriter
    targets: list[Target]
    t0: float = field(default_factory=time.time)
    phase: str = "starting"
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    health: dict[str, ProbeHealth] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # the latest live figures probes publish for progress lines and the TUI
    live: dict[str, Any] = field(default_factory=dict)
    # one ptrace user per process at a time: a blocking py-spy window and memray's gdb
    # injection cannot both attach (the second gets "no permission")
    _ptrace: dict[int, asyncio.Lock] = field(default_factory=dict)

    def ptrace_lock(self, pid: int) -> asyncio.Lock:
        return self._ptrace.setdefault(pid, asyncio.Lock())

    def elapsed(self) -> float:
        return time.time() - self.t0

    def set_health(self, name: str, state: str, note: str = "") -> None:
        with self.lock:
            previous = self.health.get(name)
            self.health[name] = ProbeHealth(name, state, note)
        if note and (previous is None or previous.note != note):
            self.notice(f"{name}: {note}")

    def notice(self, text: str) -> None:
        with self.lock:
            self.messages.append(text)
            del self.messages[:-50]
        self.bundle.emit("notices", {"text": text})

    def publish(self, key: str, value: Any) -> None:
        with self.lock:
            self.live[key] = value


class ProbeTask:
    """Base class of a probe adapter; subclasses override what they need."""

    name = "probe"

    async def start(self, ctx: SessionContext) -> None:
        """Quick start-up (spawn subprocesses, connect). Raise DiagError to disable."""

    async def run(self, ctx: SessionContext) -> None:
        """Collect until ``ctx.stopping`` is set."""
        await ctx.stopping.wait()

    async def stop(self, ctx: SessionContext) -> None:
        """Final collection and clean-up; must not raise."""

    async def act(self, ctx: SessionContext, action: Action) -> str | None:
        """Handle a live action, or None when not this probe's business."""
        return None


@dataclass(frozen=True)
class Progress:
    """Headless progress on stderr, one line every few seconds."""

    every_s: float = 5.0
    stream: Any = sys.stderr


class Session:
    def __init__(
        self,
        config: RunConfig,
        bundle: BundleWriter,
        targets: list[Target],
        probes: list[ProbeTask],
        progress: Progress | None = None,
    ) -> None:
        self.ctx = SessionContext(config=config, bundle=bundle, targets=targets)
        self.probes = probes
        self.progress = progress
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.status = "running"

    # -- phases ------------------------------------------------------------------------

    def _phase(self, phase: str) -> None:
        self.ctx.phase = phase
        self.ctx.bundle.emit("session", {"phase": phase})

    def request_stop(self, status: str = "interrupted") -> None:
        """Thread-safe: end the run early; what was collected is kept."""
        if self.status == "running":
            self.status = status
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.ctx.stopping.set)

    async def _sleep_or_stop(self, seconds: float) -> bool:
        """Sleep; True when the session was asked to stop meanwhile."""
        try:
            await asyncio.wait_for(self.ctx.stopping.wait(), timeout=seconds)
            return True
        except asyncio.TimeoutError:
            return False

    async def run(self) -> Path:
        """Run the whole session; returns the bundle path (always closed, even on error)."""
        self._loop = asyncio.get_running_loop()
        ctx = self.ctx
        started: list[ProbeTask] = []
        try:
            for probe in self.probes:
                try:
                    await probe.start(ctx)
                    started.append(probe)
                    ctx.health.setdefault(probe.name, ProbeHealth(probe.name, "ok"))
                except Exception as exc:  # a probe that cannot start is disabled, not fatal
                    ctx.set_health(probe.name, "off", _one_line(exc))
            self._tasks = [
                asyncio.create_task(self._guard(p), name=f"probe:{p.name}") for p in started
            ]
            if self.progress is not None:
                self._tasks.append(asyncio.create_task(self._progress_loop()))
            self._phase("warmup")
            ctx.publish("planned_end", ctx.elapsed() + ctx.config.warmup + ctx.config.duration)
            stopped = await self._sleep_or_stop(ctx.config.warmup)
            if not stopped:
                self._phase("measuring")
                stopped = await self._sleep_or_stop(ctx.config.duration)
            self._phase("stopping")
            ctx.stopping.set()
            for probe in reversed(started):
                try:
                    await asyncio.wait_for(probe.stop(ctx), timeout=60)
                except Exception as exc:
                    ctx.set_health(probe.name, "failed", f"stop: {_one_line(exc)}")
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self.status == "running":
                self.status = "complete"
            self._phase("done")
        except BaseException:
            self.status = "failed" if self.status == "running" else self.status
            ctx.stopping.set()
            for probe in reversed(started):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(probe.stop(ctx), timeout=20)
            raise
        finally:
            ctx.bundle.update_manifest(probes={name: h.state for name, h in ctx.health.items()})
            ctx.bundle.close(self.status)
        return ctx.bundle.path

    async def _guard(self, probe: ProbeTask) -> None:
        try:
            await probe.run(self.ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one probe failing never ends the run
            self.ctx.set_health(probe.name, "failed", _one_line(exc))

    async def act(self, action: Action) -> str:
        for probe in self.probes:
            answer = await probe.act(self.ctx, action)
            if answer is not None:
                return answer
        return f"{type(action).__name__}: nothing in this session can do that"

    async def _progress_loop(self) -> None:
        assert self.progress is not None
        while True:
            await asyncio.sleep(self.progress.every_s)
            print(self.progress_line(), file=self.progress.stream, flush=True)

    def progress_line(self) -> str:
        ctx = self.ctx
        with ctx.lock:
            total = float(ctx.live.get("planned_end") or ctx.config.warmup + ctx.config.duration)
        parts = [f"[{format_duration(ctx.elapsed())}/{format_duration(total)}] {ctx.phase}"]
        with ctx.lock:
            load = ctx.live.get("load")
            health = list(ctx.health.values())
        if isinstance(load, dict):
            p95 = load.get("p95_ms")
            parts.append(
                f"{load.get('users', 0)} users · {float(load.get('rps', 0)):.1f} req/s · "
                f"p95 {'-' if p95 is None else f'{p95:.0f}'} ms · "
                f"{float(load.get('fails_per_s', 0)):.1f} fail/s"
            )
        if health:
            parts.append("probes: " + ", ".join(f"{h.name} {h.state}" for h in health))
        return " · ".join(parts)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---- the live view ----------------------------------------------------------------------


class _Tap:
    """The live figures that must move every second (load, endpoints, process series),
    kept in memory from the records as they are written; the expensive analysis
    (findings, hotspots, plans) refreshes on its own slower clock.

    Series keep their last ``keep`` seconds (more than any sparkline is wide) and each
    process its first point (the change over the run starts there). They are full after
    five minutes; keeping 15 made them grow for the first quarter hour of every run."""

    def __init__(self, t0: float, keep: int = 300) -> None:
        self.t0 = t0
        self.keep = keep
        self.lock = threading.Lock()
        self.load: deque[LoadPoint] = deque(maxlen=keep)
        self.endpoints: tuple[EndpointRow, ...] = ()
        self.series: dict[int, deque[ProcessPoint]] = {}
        self.first: dict[int, ProcessPoint] = {}

    def __call__(self, stream: str, data: dict[str, Any]) -> None:
        kind = data.get("type")
        t = float(data.get("t") or 0.0) - self.t0
        with self.lock:
            if stream == "load" and kind == "tick":
                self.load.append(
                    LoadPoint(t, int(data["users"]), float(data["rps"]),
                              float(data["fail_per_s"]), data.get("p50_ms"),
                              data.get("p95_ms"), data.get("p99_ms"))
                )  # fmt: skip
            elif stream == "load" and kind == "endpoints":
                self.endpoints = tuple(
                    EndpointRow(
                        f"{r.get('method') or ''} {r['name']}".strip(),
                        int(r["requests"]),
                        int(r["failures"]),
                        float(r.get("rps") or 0.0),
                        r.get("p50_ms"),
                        r.get("p95_ms"),
                        r.get("p99_ms"),
                        r.get("max_ms"),
                    )
                    for r in data.get("rows") or []
                    if r.get("name") != "Aggregated"
                )
            elif stream == "process" and kind == "process":
                pid = int(data["pid"])
                point = ProcessPoint(t, float(data["cpu_percent"]), int(data["rss"]))
                self.first.setdefault(pid, point)
                self.series.setdefault(pid, deque(maxlen=self.keep)).append(point)

    def view(
        self,
    ) -> tuple[tuple[LoadPoint, ...], tuple[EndpointRow, ...], dict[int, tuple[ProcessPoint, ...]]]:
        """What a snapshot shows: load and each process's series, oldest first."""
        with self.lock:
            series = {}
            for pid, points in self.series.items():
                first = self.first[pid]
                series[pid] = tuple(points) if points[0] is first else (first, *points)
            return tuple(self.load), self.endpoints, series


class LiveSession:
    """A Session running on its own thread and event loop, seen through ``LiveSource``.

    ``snapshot()`` combines the probes' live figures with the latest analysis of the bundle
    so far (``diag.analysis.report_view``), recomputed every few seconds in a child
    process (``diag.liveworker``, which says why), so the TUI shows exactly what the
    headless report would.
    """

    def __init__(self, session: Session, analyse_every_s: float = 5.0) -> None:
        self.session = session
        self.analyse_every_s = analyse_every_s
        self._thread = threading.Thread(target=self._main, name="archon-diag-session", daemon=True)
        self._snapshot = LiveSnapshot(
            elapsed_s=0.0, phase="starting", shape=session.ctx.config.shape, load_state="off"
        )
        self._snap_lock = threading.Lock()
        self._analyser = threading.Thread(
            target=self._analyse_loop, name="archon-diag-analysis", daemon=True
        )
        self.error: BaseException | None = None
        self.bundle_path: Path | None = None
        self._done = threading.Event()
        self._closing = False
        self.worker = AnalysisWorker()
        self._tap = _Tap(session.ctx.bundle.started_at)
        session.ctx.bundle.listeners.append(self._tap)

    def start(self) -> LiveSession:
        self._thread.start()
        self._analyser.start()
        return self

    def _main(self) -> None:
        try:
            self.bundle_path = asyncio.run(self.session.run())
        except BaseException as exc:  # surfaced through .error and the status line
            self.error = exc
        finally:
            self._done.set()

    def _analyse_loop(self) -> None:
        # the worker's CPU stays under ~3 % of a core: wait at least thirty times as long
        # as the last pass cost (re-analysis grows with the run)
        interval = self.analyse_every_s
        while not self._done.wait(interval):
            cost = self._refresh()
            interval = max(self.analyse_every_s, 30 * cost)
        self._refresh(final=True)
        self.worker.close()

    def _refresh(self, final: bool = False) -> float:
        """One analysis pass; returns its CPU seconds."""
        ctx = self.session.ctx
        try:
            reply = self.worker.run(ctx.bundle.path, final=final)
        except WorkerError as exc:
            if not self._closing:
                ctx.notice(f"analysis: {exc}")
            return 0.0
        with self._snap_lock:
            self._snapshot = reply.snapshot
        return reply.cpu_s

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    # LiveSource
    def snapshot(self) -> LiveSnapshot:
        ctx = self.session.ctx
        with self._snap_lock:
            snap = self._snapshot
        snap = with_probes(snap, ctx)
        with ctx.lock:
            health = tuple(ctx.health.values())
            messages = tuple(ctx.messages[-10:])
            load_state = str(ctx.live.get("load_state", snap.load_state))
        phase = "done" if self.done else ctx.phase
        load, tap_endpoints, series = self._tap.view()
        endpoints = tap_endpoints or snap.endpoints
        views = {v.pid: v for v in snap.processes}
        processes = tuple(
            replace(views[t.pid], series=series.get(t.pid, views[t.pid].series))
            if t.pid in views
            else ProcessView(t.label, t.pid, True, series.get(t.pid, ()))
            for t in ctx.targets
        )
        return replace(
            snap,
            elapsed_s=ctx.elapsed(),
            phase=phase,
            probes=health,
            messages=messages,
            load_state=load_state,
            load=load or snap.load,
            endpoints=endpoints,
            processes=processes or snap.processes,
        )

    def act(self, action: Action) -> str:
        from diag.live import SaveReport

        loop = self.session._loop
        if isinstance(action, SaveReport):
            return self.save_report()
        if loop is None or self.done:
            return "the session is not running"
        future = asyncio.run_coroutine_threadsafe(self.session.act(action), loop)
        try:
            return future.result(timeout=30)
        except Exception as exc:
            return f"{type(action).__name__} failed: {_one_line(exc)}"

    def save_report(self) -> str:
        from diag.analysis import write_reports

        path = self.session.ctx.bundle.path
        written = write_reports(Bundle(path), path)
        return f"saved {len(written)} reports in {path}"

    def close(self) -> None:
        self._closing = True
        self.session.request_stop("interrupted")
        self._thread.join(timeout=90)
        self.worker.close()  # the final pass is for a screen that is going away
