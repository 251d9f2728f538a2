"""Adapters that run each probe family inside a Session and write its records to the
bundle: load (Locust), process series, py-spy windows, memray windows, PostgreSQL.

Each adapter only moves records: collection lives in ``probes``, analysis in ``diag``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from diag.live import (
    Action,
    AttachProfiler,
    DetachProfiler,
    Explain,
    MemrayWindow,
    PauseLoad,
    ResumeLoad,
    SetUsers,
    StopLoad,
)
from diag.session import ProbeTask, SessionContext
from probes.errors import DiagError
from probes.targets import Target, alive

# ---- load --------------------------------------------------------------------------------


class LoadProbe(ProbeTask):
    name = "locust"

    def __init__(self) -> None:
        self.run_: Any = None
        self._result_written = False

    async def start(self, ctx: SessionContext) -> None:
        from probes.loadshapes import plan
        from probes.locust import LoadSpec, LocustRun

        cfg = ctx.config
        # the load covers the warm-up and the measured window
        shape = plan(
            cfg.shape,
            users=cfg.users,
            duration_s=cfg.warmup + cfg.duration + 2,
            spawn_rate=cfg.spawn_rate,
        )
        spec = LoadSpec(
            plan=shape,
            host=str(cfg.host),
            locustfile=cfg.locustfile,
            agents_host=cfg.agents_host,
        )
        # every tick goes to the bundle (run() below); the analysis reads them from there
        self.run_ = LocustRun(spec, ctx.bundle.artefact_dir("locust"), keep_ticks=False)
        await self.run_.start()
        ctx.publish("load_state", "running")
        ctx.publish("shape", cfg.shape)

    async def run(self, ctx: SessionContext) -> None:
        from probes.locust import LoadTick

        async for record in self.run_.events():
            ctx.bundle.emit("load", record)
            if isinstance(record, LoadTick):
                ctx.publish(
                    "load",
                    {
                        "users": record.users,
                        "rps": record.rps,
                        "p95_ms": record.p95_ms,
                        "fails_per_s": record.fail_per_s,
                    },
                )
                if record.stage:
                    ctx.publish("shape", f"{ctx.config.shape} · {record.stage}")
                ctx.publish("load_state", "paused" if record.mode == "paused" else "running")
        await self._finish(ctx, await self.run_.wait())

    async def _finish(self, ctx: SessionContext, result: Any) -> None:
        if self._result_written:
            return
        self._result_written = True
        ctx.bundle.emit("load_result", result.to_json())
        ctx.publish("load_state", "stopped")
        if result.all_refused:
            ctx.set_health(self.name, "degraded", f"every request to {result.host} was refused")

    async def stop(self, ctx: SessionContext) -> None:
        if self.run_ is None:
            return
        result = await self.run_.stop()
        await self._finish(ctx, result)

    async def act(self, ctx: SessionContext, action: Action) -> str | None:
        if isinstance(action, StopLoad):
            if self.run_ is None or not self.run_.running:
                return "the load is not running"
            result = await self.run_.stop()
            await self._finish(ctx, result)
            return f"load stopped after {result.total.requests} requests"
        if isinstance(action, (PauseLoad, ResumeLoad, SetUsers)):
            if self.run_ is None:
                return "there is no load in this session"
            try:
                if isinstance(action, PauseLoad):
                    ack = await self.run_.pause()
                elif isinstance(action, ResumeLoad):
                    ack = await self.run_.resume()
                else:
                    ack = await self.run_.set_users(action.users)
            except DiagError as exc:
                return str(exc)
            ctx.bundle.emit("load", ack)
            state = "paused" if ack.mode == "paused" else "running"
            ctx.publish("load_state", state)
            what = {"paused": "load paused", "manual": f"holding {ack.target_users} users"}
            return what.get(ack.mode, "load follows its plan again")
        return None


# ---- process series ----------------------------------------------------------------------


class ProcessProbe(ProbeTask):
    name = "process"

    def __init__(self, targets: list[Target]) -> None:
        self.targets = targets

    async def run(self, ctx: SessionContext) -> None:
        from probes.process import ProcessSampler, TargetGone

        sampler = ProcessSampler(self.targets)

        def emit(record: Any) -> None:
            ctx.bundle.emit("process", record)
            if isinstance(record, TargetGone):
                ctx.notice(f"{record.label} exited (marked gone)")

        await sampler.run(emit, ctx.stopping)


# ---- py-spy ------------------------------------------------------------------------------


class PySpyProbe(ProbeTask):
    """CPU (and concurrent ``--idle`` wall) windows, one pair after another, per target."""

    name = "pyspy"

    def __init__(self, targets: list[Target]) -> None:
        self.targets = {t.pid: t for t in targets}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.stop_flags: dict[int, asyncio.Event] = {}

    async def start(self, ctx: SessionContext) -> None:
        from probes.pyspy import pyspy_path

        pyspy_path()  # raises PrerequisiteError with the fix when py-spy is missing

    async def run(self, ctx: SessionContext) -> None:
        for pid in self.targets:
            self._attach(ctx, pid)
        await ctx.stopping.wait()

    def _attach(self, ctx: SessionContext, pid: int) -> None:
        if pid in self.tasks and not self.tasks[pid].done():
            return
        flag = asyncio.Event()
        self.stop_flags[pid] = flag
        self.tasks[pid] = asyncio.create_task(self._loop(ctx, self.targets[pid], flag))
        self._publish(ctx)

    def _publish(self, ctx: SessionContext) -> None:
        attached = {pid: ("pyspy",) for pid, t in self.tasks.items() if not t.done()}
        with ctx.lock:
            current = dict(ctx.live.get("profilers") or {})
            for pid in self.targets:
                rest = tuple(p for p in current.get(pid, ()) if p != "pyspy")
                current[pid] = rest + attached.get(pid, ())
            ctx.live["profilers"] = current

    async def _loop(self, ctx: SessionContext, target: Target, flag: asyncio.Event) -> None:
        from probes.pyspy import PySpyRecorder, record_window, wall_rate

        cfg = ctx.config
        out = ctx.bundle.artefact_dir("pyspy")
        n = 0
        stop = asyncio.Event()

        async def relay() -> None:
            await asyncio.wait(
                [asyncio.create_task(ctx.stopping.wait()), asyncio.create_task(flag.wait())],
                return_when=asyncio.FIRST_COMPLETED,
            )
            stop.set()

        relay_task = asyncio.create_task(relay())
        try:
            while not stop.is_set() and alive(target.pid):
                base = out / f"pyspy-{target.pid}-{n:04d}"
                recorders = [
                    PySpyRecorder(
                        target.pid,
                        base.with_suffix(".cpu.txt"),
                        label=target.label,
                        duration=cfg.pyspy_window,
                        rate=cfg.rate,
                        mode="cpu",
                        nonblocking=cfg.nonblocking,
                    ),
                    PySpyRecorder(
                        target.pid,
                        base.with_suffix(".wall.txt"),
                        label=target.label,
                        duration=cfg.pyspy_window,
                        rate=wall_rate(cfg.rate),
                        mode="wall",
                        nonblocking=True,
                    ),
                ]
                async with ctx.ptrace_lock(target.pid):
                    windows = await asyncio.gather(*(record_window(r, stop) for r in recorders))
                n += 1
                if stop.is_set():  # cut short by the end of the run: keep what is usable
                    windows = [w for w in windows if not w.error]
                for w in windows:
                    ctx.bundle.emit("pyspy", w)
                errors = [w.error for w in windows if w.error]
                if errors and alive(target.pid):
                    ctx.set_health(self.name, "degraded", f"{target.label}: {errors[0]}")
                    if n == 1:
                        return  # permission or not Python: do not hammer it
        finally:
            relay_task.cancel()
            self._publish(ctx)

    async def stop(self, ctx: SessionContext) -> None:
        for flag in self.stop_flags.values():
            flag.set()
        for task in self.tasks.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout=30)

    async def act(self, ctx: SessionContext, action: Action) -> str | None:
        if isinstance(action, AttachProfiler) and action.profiler == "pyspy":
            if action.pid not in self.targets:
                return f"pid {action.pid} is not a target of this session"
            self._attach(ctx, action.pid)
            return f"py-spy attached to {self.targets[action.pid].label}"
        if isinstance(action, DetachProfiler) and action.profiler == "pyspy":
            flag = self.stop_flags.get(action.pid)
            if flag is None:
                return "py-spy is not attached there"
            flag.set()
            return f"py-spy detaching from pid {action.pid}"
        return None


# ---- memray ------------------------------------------------------------------------------


class MemrayProbe(ProbeTask):
    """One bounded attach window per target in the measured phase (never a whole soak:
    memray with --trace-python-allocators costs ~2x), plus windows asked for live."""

    name = "memray"

    def __init__(self, targets: list[Target], delay_s: float) -> None:
        self.targets = {t.pid: t for t in targets}
        self.delay_s = delay_s
        self.running: dict[int, asyncio.Task[None]] = {}
        self._gdb = asyncio.Lock()

    async def start(self, ctx: SessionContext) -> None:
        from probes.memray import memray_path

        memray_path()

    async def run(self, ctx: SessionContext) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ctx.stopping.wait(), timeout=self.delay_s)
            return
        for pid in self.targets:
            self._window(ctx, pid, ctx.config.memray_window)
        await ctx.stopping.wait()

    def _window(self, ctx: SessionContext, pid: int, seconds: float) -> bool:
        if pid in self.running and not self.running[pid].done():
            return False
        self.running[pid] = asyncio.create_task(self._one(ctx, self.targets[pid], seconds))
        return True

    async def _one(self, ctx: SessionContext, target: Target, seconds: float) -> None:
        from probes.memray import MemrayRecorder, memray_unavailable

        why = await asyncio.to_thread(memray_unavailable, target.pid)
        if why is not None:
            ctx.set_health(self.name, "degraded", why)
            return
        out = ctx.bundle.artefact_dir("memray")
        # one gdb injection at a time, and never while py-spy holds the process
        async with self._gdb, ctx.ptrace_lock(target.pid):
            rec = MemrayRecorder(target.pid, out, label=target.label, duration=seconds)
            rec.start()
            while not rec.attach_finished():
                await asyncio.sleep(0.05)
        self._mark(ctx, target.pid, True)
        try:
            deadline = time.monotonic() + seconds + 30
            while not await asyncio.to_thread(rec.poll):
                if ctx.stopping.is_set() or time.monotonic() > deadline:
                    await asyncio.to_thread(rec.stop)
                    deadline = time.monotonic() + 30
                await asyncio.sleep(1.0)
            # the report reads the capture (once, cached); reading it here too would
            # double the CPU and the peak memory of the diag process
            window = await asyncio.to_thread(rec.result, False)
            ctx.bundle.emit("memray", window)
            if window.error:
                ctx.set_health(self.name, "degraded", f"{target.label}: {window.error}")
        finally:
            self._mark(ctx, target.pid, False)

    def _mark(self, ctx: SessionContext, pid: int, on: bool) -> None:
        with ctx.lock:
            current = dict(ctx.live.get("profilers") or {})
            rest = tuple(p for p in current.get(pid, ()) if p != "memray")
            current[pid] = rest + (("memray",) if on else ())
            ctx.live["profilers"] = current

    async def stop(self, ctx: SessionContext) -> None:
        for task in self.running.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout=60)

    async def act(self, ctx: SessionContext, action: Action) -> str | None:
        if isinstance(action, MemrayWindow):
            if action.pid not in self.targets:
                return f"pid {action.pid} is not a target of this session"
            if not self._window(ctx, action.pid, action.seconds):
                return "a memray window is already open on that process"
            return f"memray window of {action.seconds:.0f}s opening on pid {action.pid}"
        return None


# ---- PostgreSQL --------------------------------------------------------------------------


class PostgresProbe(ProbeTask):
    """Statement snapshots, active-session samples, statement texts, call sites, and at
    the end texts + health + plans (``pg_report``), all from one worker thread."""

    name = "postgres"

    def __init__(self, dsn: str, targets: list[Target], jsonlog: Path | None = None) -> None:
        self.dsn = dsn
        self.targets = targets
        self.jsonlog = jsonlog
        self.collector: Any = None
        self._texts_seen: set[int] = set()
        self._last_texts = 0.0
        self._last_callsite = 0.0
        self._owners: dict[int, Target] = {}
        self._owners_at = 0.0
        self._shapes: dict[int, Any] = {}  # queryid -> diag.callsites.Shape of its text

    async def start(self, ctx: SessionContext) -> None:
        from probes.postgres import WindowCollector

        self.collector = WindowCollector(
            self.dsn,
            sample_interval_s=ctx.config.ash_interval,
            snapshot_interval_s=5.0,
            keep=False,  # every record goes to the bundle; _diagnose reads them back
        )
        first = await asyncio.to_thread(self.collector.start)
        ctx.bundle.emit("pg_statements", first)

    async def run(self, ctx: SessionContext) -> None:
        from probes.postgres.activity import ActivitySample

        measuring_marked = False
        while not ctx.stopping.is_set():
            records, delay = await asyncio.to_thread(self._poll)
            for record in records:
                if isinstance(record, ActivitySample):
                    ctx.bundle.emit("pg_activity", record, t=record.t)
                    ctx.publish("pg_activity", record)
                    await self._callsites(ctx, record)
                else:
                    ctx.bundle.emit("pg_statements", record, t=record.taken_at)
            if ctx.phase == "measuring" and not measuring_marked:
                measuring_marked = True  # a fresh snapshot right at the window's start
                snap = await asyncio.to_thread(self._snapshot_now)
                if snap is not None:
                    ctx.bundle.emit("pg_statements", snap, t=snap.taken_at)
            if time.time() - self._last_texts > 10:
                await asyncio.to_thread(self._texts, ctx)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ctx.stopping.wait(), timeout=max(0.01, delay))

    def _poll(self) -> tuple[list[Any], float]:
        """One thread hop per round: what is due, and how long until the next."""
        return self.collector.poll(), self.collector.seconds_to_next()

    def _snapshot_now(self) -> Any:
        try:
            return self.collector._link.call(self.collector._statements.snapshot)
        except Exception:
            return None

    def _texts(self, ctx: SessionContext) -> None:
        from probes.postgres.statements import fetch_texts

        self._last_texts = time.time()
        latest = self.collector.latest
        if latest is None:
            return
        new = {s.queryid for s in latest.statements} - self._texts_seen
        if not new:
            return
        try:
            texts = self.collector._link.call(lambda conn: fetch_texts(conn, new))
        except Exception:
            return
        from diag.callsites import Shape

        for text in texts.values():
            ctx.bundle.emit("pg_texts", text)
            if not text.is_probe:
                self._shapes[text.queryid] = Shape.of(text.query)
        self._texts_seen |= set(texts)

    async def _callsites(self, ctx: SessionContext, sample: Any) -> None:
        """Every two seconds: the target processes holding database sessions (client port
        -> socket owner) -> one non-blocking ``py-spy dump --locals`` of each -> the
        statement each database client call is sending, matched to its queryid
        (``diag.callsites``) and recorded with its call site and route handler."""
        from diag.callsites import client_calls, match_statement, session_shapes
        from probes.pyspy import dump_threads

        if time.time() - self._last_callsite < 2 or not self.targets:
            return
        self._last_callsite = time.time()
        if time.time() - self._owners_at > 15:  # reading sockets is not free
            self._owners = await asyncio.to_thread(_port_owners, self.targets)
            self._owners_at = time.time()
        by_pid: dict[int, list[Any]] = {}
        for s in sample.sessions:
            target = self._owners.get(int(s.client_port)) if s.client_port else None
            if target is not None:
                by_pid.setdefault(target.pid, []).append(s)
        targets = {t.pid: t for t in self.targets}
        for pid, sessions in by_pid.items():
            threads = await asyncio.to_thread(dump_threads, pid, with_locals=True)
            live = session_shapes(sessions)
            for call in client_calls(threads):
                qid = match_statement(call, live)
                if qid is None:
                    qid = match_statement(call, self._shapes)
                if qid is None:
                    continue
                ctx.bundle.emit(
                    "callsites",
                    {
                        "queryid": qid,
                        "pid": pid,
                        "process": targets[pid].label if pid in targets else str(pid),
                        "site": call.site,
                        "handler": call.handler,
                        "client_port": next(
                            (s.client_port for s in sessions if s.query_id == qid), None
                        ),
                    },
                )

    async def stop(self, ctx: SessionContext) -> None:
        if self.collector is None:
            return
        data = await asyncio.to_thread(self.collector.stop)
        if data.snapshots:
            ctx.bundle.emit("pg_statements", data.snapshots[-1], t=data.snapshots[-1].taken_at)
        try:
            report = await asyncio.wait_for(asyncio.to_thread(self._diagnose, ctx, data), 120)
            ctx.bundle.emit("pg_report", report)
        except Exception as exc:
            ctx.set_health(self.name, "degraded", f"final database analysis: {exc}")

    def _diagnose(self, ctx: SessionContext, data: Any) -> dict[str, Any]:
        from diag.analysis import request_counts
        from diag.bundle import Bundle
        from diag.dbanalysis import diagnose
        from diag.plans import JsonlogPlans
        from probes import pgconn
        from probes.postgres import jsonlog_path
        from probes.postgres.activity import ActivitySample
        from probes.postgres.statements import StatementSnapshot
        from probes.postgres.window import WindowData
        from probes.redact import redact_dsn

        bundle = Bundle(ctx.bundle.path)
        start = None
        for e in bundle.events("session"):
            if e.get("phase") == "measuring":
                start = float(e["t"])
        # the collector keeps no history (runs can last hours): read the window back
        snaps = [StatementSnapshot.from_json(e) for e in bundle.events("pg_statements")]
        samples = tuple(ActivitySample.from_json(e) for e in bundle.events("pg_activity"))
        snaps.sort(key=lambda s: s.taken_at)
        if not snaps:
            snaps = list(data.snapshots)
        if start is not None:  # measure from the snapshot taken at the window's start
            measured = [s for s in snaps if s.taken_at >= start - 1.0]
            if len(measured) >= 2:
                snaps = measured
        window = WindowData(tuple(snaps), samples, data.reconnects, data.notes)
        counts = request_counts(bundle, start, None)
        with pgconn.connect(self.dsn, statement_timeout_ms=15000) as conn:
            path = self.jsonlog or jsonlog_path(conn)
            jsonlog = JsonlogPlans(path) if path is not None and path.is_file() else None
            report = diagnose(
                conn,
                window,
                dsn_redacted=redact_dsn(self.dsn),
                jsonlog=jsonlog,
                request_counts=counts or None,
            )
        result: dict[str, Any] = report.to_json()
        return result

    async def act(self, ctx: SessionContext, action: Action) -> str | None:
        if not isinstance(action, Explain):
            return None
        asyncio.get_running_loop().create_task(self._explain(ctx, action.queryid))
        return f"planning queryid {action.queryid}…"

    async def _explain(self, ctx: SessionContext, queryid: int) -> None:
        from diag.liveview import plan_view

        try:
            data = await asyncio.to_thread(self._plan, queryid)
        except Exception as exc:
            ctx.notice(f"explain {queryid}: {exc}")
            return
        with ctx.lock:
            plans = dict(ctx.live.get("plans") or {})
            plans[queryid] = plan_view(queryid, data)
            ctx.live["plans"] = plans
        ctx.notice(f"plan ready for queryid {queryid}")

    def _plan(self, queryid: int) -> dict[str, Any]:
        from diag.analysis import _plan_tree, plan_tips
        from diag.dbanalysis import plan_report
        from diag.plans import JsonlogPlans
        from probes import pgconn
        from probes.postgres import jsonlog_path
        from probes.postgres.statements import fetch_texts

        with pgconn.connect(self.dsn, statement_timeout_ms=10000) as conn:
            texts = fetch_texts(conn, [queryid])
            if queryid not in texts:
                raise DiagError("no such statement in pg_stat_statements")
            path = self.jsonlog or jsonlog_path(conn)
            jsonlog = JsonlogPlans(path) if path is not None and path.is_file() else None
            report = plan_report(conn, queryid, texts[queryid].query, jsonlog=jsonlog)
        data = report.to_json()
        data["tree"] = _plan_tree(data.get("plan"))
        data["tips"] = plan_tips(data.get("tips"))
        return data


def _port_owners(targets: list[Target]) -> dict[int, Target]:
    """Local TCP port -> target process, from the targets' open sockets."""
    import psutil

    owners: dict[int, Target] = {}
    for t in targets:
        try:
            for conn in psutil.Process(t.pid).net_connections(kind="tcp"):
                if conn.laddr and conn.raddr:
                    owners[int(conn.laddr.port)] = t
        except (psutil.Error, OSError):
            continue
    return owners
