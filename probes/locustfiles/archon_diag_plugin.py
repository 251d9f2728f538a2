"""archon-diag's Locust plugin: live stats over an inherited pipe, stage tracking, the shape.

Runs INSIDE the Locust subprocess only: archon-diag passes this file to ``locust -f`` by
path, next to the scenario. Nothing in ``diag`` or the rest of ``probes`` may import it
(importing locust monkey-patches the importing process with gevent).

What it does, on the local runner or the master (never on workers):

- every second, one JSON line on the fd given by ``--diag-fd`` (a pipe the parent keeps
  reading): state, users, interval rps / failures/s, exact p50/p95/p99 of the interval
  (from the difference of the response-time histograms), cumulative requests/failures;
- every ``--diag-endpoints-every`` seconds the per-endpoint rows (cumulative);
- a ``stage`` line when a shape stage ends (its measured window, verdict against limits);
- a ``final`` line at quit, after the runner (and every worker) has stopped;
- commands read from the fd given by ``--diag-control-fd`` (a second pipe, written by the
  parent): ``{"cmd": "users", "users": N}`` holds N users, ``{"cmd": "pause"}`` runs 0
  users, ``{"cmd": "resume"}`` ends a pause (back to the plan or the last ``users``),
  ``{"cmd": "plan"}`` drops the override; each is answered with a ``control`` line.

The fd is non-blocking: a line that does not fit is dropped (counted in ``dropped``), so a
slow reader never stalls Locust. ``runner.stats.total`` is re-read on every tick (it is
replaced when a run starts); ``serialize_stats()`` is never called (it resets entries).
Per-second counters older than ``--diag-prune-after`` seconds are pruned so long soaks keep
Locust's memory bounded. Workers report to the master every second instead of every 3 s.

The shape class exists only when ``ARCHON_DIAG_SHAPE`` holds a plan (JSON, built by
``probes.loadshapes``), so loading this plugin next to a locustfile with its own shape
changes nothing unless archon-diag asked for a shape.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import time
from typing import Any

import gevent
from gevent.socket import wait_read
from locust import LoadTestShape, events
from locust import runners as locust_runners
from locust.env import Environment
from locust.runners import (
    STATE_CLEANUP,
    STATE_STOPPED,
    STATE_STOPPING,
    MasterRunner,
    Runner,
    WorkerRunner,
)
from locust.stats import StatsEntry, calculate_response_time_percentile

# Workers report every second (default 3 s) so the master's 1 Hz ticks see fresh numbers.
locust_runners.WORKER_REPORT_INTERVAL = 1.0

SHAPE_ENV = "ARCHON_DIAG_SHAPE"
_PRUNE_EVERY_S = 10.0
_HISTORY_KEEP = 720  # stats.history rows (one per few seconds) kept for Locust's own charts
_FINAL_DRAIN_S = 10.0


def _add_options(parser: Any) -> None:
    parser.add_argument(
        "--diag-fd", type=int, default=-1, include_in_web_ui=False,
        help="archon-diag: write live JSON lines to this inherited file descriptor",
    )  # fmt: skip
    parser.add_argument(
        "--diag-control-fd", type=int, default=-1, include_in_web_ui=False,
        help="archon-diag: read control commands (JSON lines) from this inherited fd",
    )  # fmt: skip
    parser.add_argument(
        "--diag-endpoints-every", type=float, default=5.0, include_in_web_ui=False,
        help="archon-diag: seconds between per-endpoint rows",
    )  # fmt: skip
    parser.add_argument(
        "--diag-prune-after", type=float, default=300.0, include_in_web_ui=False,
        help="archon-diag: drop per-second counters older than this many seconds",
    )  # fmt: skip


class _Snap:
    """The cumulative figures of one StatsEntry at one moment (histogram copied)."""

    __slots__ = ("failures", "hist", "owner", "requests", "t", "timed", "total_rt")

    def __init__(self, entry: StatsEntry | None, t: float) -> None:
        self.owner = entry
        self.t = t
        if entry is None:
            self.hist: dict[int, int] = {}
            self.requests = self.timed = self.failures = 0
            self.total_rt = 0.0
        else:
            self.hist = dict(entry.response_times)
            self.requests = entry.num_requests
            self.timed = entry.num_requests - entry.num_none_requests
            self.failures = entry.num_failures
            self.total_rt = float(entry.total_response_time)

    def valid_base_for(self, entry: StatsEntry) -> bool:
        # a replaced or reset entry makes the old snapshot meaningless
        return self.owner is entry and entry.num_requests >= self.requests


def _pct(hist: dict[int, int], count: int, q: float) -> int | None:
    return calculate_response_time_percentile(hist, count, q) if count > 0 else None


def _delta(new: _Snap, old: _Snap) -> dict[str, Any]:
    """Interval figures between two snapshots of the same entry."""
    hist = {k: v - old.hist.get(k, 0) for k, v in new.hist.items() if v - old.hist.get(k, 0)}
    timed = new.timed - old.timed
    requests = new.requests - old.requests
    failures = new.failures - old.failures
    dt = max(new.t - old.t, 1e-6)
    return {
        "interval": round(dt, 3),
        "requests": requests,
        "failures": failures,
        "rps": round(requests / dt, 3),
        "fail_per_s": round(failures / dt, 3),
        "p50_ms": _pct(hist, timed, 0.5),
        "p95_ms": _pct(hist, timed, 0.95),
        "p99_ms": _pct(hist, timed, 0.99),
        "avg_ms": round((new.total_rt - old.total_rt) / timed, 3) if timed > 0 else None,
    }


class _Pipe:
    """Whole JSON lines to a non-blocking fd; drops rather than ever blocking Locust."""

    def __init__(self, fd: int, on_reader_gone: Any) -> None:
        self.fd = fd
        self.pending = b""  # the unwritten tail of a line that was partly written
        self.dropped = 0
        self.closed = False
        self.on_reader_gone = on_reader_gone
        os.set_blocking(fd, False)

    def send(self, record: dict[str, Any]) -> None:
        if self.closed:
            return
        self._flush()
        if self.pending:  # the pipe is full: this line goes, the next one may fit
            self.dropped += 1
            return
        self.pending = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        self._flush()

    def send_final(self, record: dict[str, Any]) -> None:
        """The last line matters more than latency: wait (bounded) for room."""
        if self.closed:
            return
        deadline = time.monotonic() + _FINAL_DRAIN_S
        self._flush()
        self.pending += (json.dumps(record, separators=(",", ":")) + "\n").encode()
        while self.pending and not self.closed and time.monotonic() < deadline:
            self._flush()
            if self.pending:
                select.select([], [self.fd], [], max(0.0, deadline - time.monotonic()))

    def _flush(self) -> None:
        while self.pending and not self.closed:
            try:
                n = os.write(self.fd, self.pending)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.EBADF):
                    self.closed = True
                    self.pending = b""
                    self.on_reader_gone()
                    return
                raise
            self.pending = self.pending[n:]


class _Control:
    """The diag side's override of the plan, read from ``--diag-control-fd``.

    ``users N`` holds N users (at the current stage's spawn rate) until ``plan``; ``pause``
    runs 0 users, stopped at once, until ``resume``, which goes back to the last ``users``
    or else to the plan. The plan's clock keeps running underneath: stages still change on
    time and the run still ends when the plan does. The shape applies the override on its
    next tick (Locust asks the shape once a second). Every command gets a ``control`` line
    back on the live pipe (``ok``, or the one-line ``error``).
    """

    def __init__(self) -> None:
        self.users: int | None = None
        self.paused = False
        self.pause_rate = 1.0
        self.fd = -1
        self.greenlet: gevent.Greenlet | None = None

    @property
    def mode(self) -> str:
        return "paused" if self.paused else ("manual" if self.users is not None else "plan")

    @property
    def active(self) -> bool:
        return self.paused or self.users is not None

    def target(self, plan_users: int | None) -> int | None:
        if self.paused:
            return 0
        return self.users if self.users is not None else plan_users

    def start(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self.greenlet = gevent.spawn(self._loop)

    def _loop(self) -> None:
        buffer = b""
        while _LIVE is None or not _LIVE.finished:
            try:
                chunk = os.read(self.fd, 4096)
            except BlockingIOError:
                wait_read(self.fd)
                continue
            except OSError:
                return
            if not chunk:  # the parent closed its end: no more commands
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    self.handle(line)

    def handle(self, line: bytes) -> None:
        try:
            command = json.loads(line)
        except ValueError:
            command = None
        if not isinstance(command, dict):
            command = {"cmd": None}
        error = self.apply(command)
        live = _LIVE
        if live is None:
            return
        now = time.time()
        live.emit(
            {
                "type": "control",
                "t": round(now, 3),
                "elapsed": round(now - live.t0, 3),
                "seq": command.get("seq"),
                "cmd": command.get("cmd"),
                "ok": error is None,
                "error": error,
                "mode": self.mode,
                "users": self.users,
                "target_users": self.target(live.stage["users"] if live.stage else None),
            }
        )

    def apply(self, command: dict[str, Any]) -> str | None:
        """Change the override; the reason it cannot, as one line, or None."""
        cmd = command.get("cmd")
        live = _LIVE
        if live is None:
            return "the plugin is not running the load here"
        if _SHAPE_CLASS is None or not isinstance(live.env.shape_class, _SHAPE_CLASS):
            return "no archon-diag load shape is in charge (the locustfile brings its own?)"
        if live.finished or live.stop_reason is not None:
            return f"the load is ending ({live.stop_reason or 'finished'})"
        if live.runner.state in (STATE_STOPPING, STATE_STOPPED, STATE_CLEANUP):
            return f"the load is {live.runner.state}"
        if cmd == "users":
            users = command.get("users")
            if isinstance(users, bool) or not isinstance(users, int) or users < 0:
                return f"users must be a whole number >= 0, not {users!r}"
            self.users, self.paused = users, False
        elif cmd == "pause":
            if not self.paused:  # stop every user in one step, whatever the spawn rate
                rate = float(live.stage["spawn_rate"]) if live.stage else 1.0
                self.pause_rate = max(rate, float(live.runner.user_count), 1.0)
                self.paused = True
        elif cmd == "resume":
            self.paused = False
        elif cmd == "plan":
            self.users, self.paused = None, False
        else:
            return f"unknown command {cmd!r} (users, pause, resume, plan)"
        if self.active and live.stage is not None:
            live.stage["manual"] = True  # its window no longer measures the planned users
        return None

    def stop(self) -> None:
        if self.greenlet is not None and gevent.getcurrent() is not self.greenlet:
            self.greenlet.kill(block=False)


_CONTROL = _Control()


class _Live:
    """The 1 Hz ticker and the stage bookkeeping for one local runner or master."""

    def __init__(self, environment: Environment, runner: Runner, fd: int) -> None:
        opts = environment.parsed_options
        self.env = environment
        self.runner = runner
        self.endpoints_every = float(getattr(opts, "diag_endpoints_every", 5.0) or 5.0)
        self.prune_after = float(getattr(opts, "diag_prune_after", 300.0) or 300.0)
        self.pipe = _Pipe(fd, self._reader_gone) if fd >= 0 else None
        self.t0 = time.time()
        self.test_started: float | None = None
        self.total_snap = _Snap(None, self.t0)
        self.endpoint_snaps: dict[tuple[str, str], _Snap] = {}
        self.last_endpoints = self.t0
        self.last_prune = self.t0
        self.finished = False
        # stage bookkeeping (driven by the shape)
        self.stage: dict[str, Any] | None = None
        self.stage_base: _Snap | None = None
        self.stage_settle_at = 0.0
        self.stage_settled = False
        self.stop_reason: str | None = None
        self.greenlet = gevent.spawn(self._loop)

    # -- output ---------------------------------------------------------------------
    def emit(self, record: dict[str, Any]) -> None:
        if self.pipe is not None:
            self.pipe.send(record)

    def _reader_gone(self) -> None:
        # archon-diag is gone: an unattended load must not run on; stop cleanly.
        if not self.finished:
            os.kill(os.getpid(), signal.SIGTERM)

    # -- ticks ----------------------------------------------------------------------
    def _loop(self) -> None:
        next_at = self.t0 + 1.0
        while not self.finished:
            gevent.sleep(max(0.0, next_at - time.time()))
            if self.finished:
                return
            now = time.time()
            next_at = next_at + 1.0 if now - next_at < 1.0 else now + 1.0
            self.tick(now)

    def _total(self) -> StatsEntry:
        return self.runner.stats.total  # re-read every time: the object gets replaced

    def tick(self, now: float) -> None:
        total = self._total()
        base = self.total_snap if self.total_snap.valid_base_for(total) else _Snap(None, 0.0)
        if base.owner is None:
            base.t = self.total_snap.t
        snap = _Snap(total, now)
        self.total_snap = snap
        if self.stage is not None and not self.stage_settled and now >= self.stage_settle_at:
            self.stage_base, self.stage_settled = snap, True
        self.emit(
            {
                "type": "tick",
                "t": round(now, 3),
                "elapsed": round(now - self.t0, 3),
                "state": self.runner.state,
                "users": self.runner.user_count,
                "target_users": _CONTROL.target(self.stage["users"] if self.stage else None),
                "mode": _CONTROL.mode,
                "stage": self.stage["name"] if self.stage else None,
                "stage_index": self.stage["index"] if self.stage else None,
                "workers": (
                    self.runner.worker_count if isinstance(self.runner, MasterRunner) else None
                ),
                **_delta(snap, base),
                "total_requests": total.num_requests,
                "total_failures": total.num_failures,
                "dropped": self.pipe.dropped if self.pipe else 0,
            }
        )
        if now - self.last_endpoints >= self.endpoints_every - 0.05:
            self.emit_endpoints(now)
        if now - self.last_prune >= _PRUNE_EVERY_S:
            self.prune(now)

    def _row(self, entry: StatsEntry, now: float, base: _Snap | None) -> dict[str, Any]:
        timed = entry.num_requests - entry.num_none_requests
        started = self.test_started or self.t0
        span = max(now - started, 1e-6)
        row: dict[str, Any] = {
            "method": entry.method,
            "name": entry.name,
            "requests": entry.num_requests,
            "failures": entry.num_failures,
            "avg_ms": round(entry.avg_response_time, 3),
            "min_ms": round(entry.min_response_time or 0, 3),
            "max_ms": round(entry.max_response_time, 3),
            "p50_ms": entry.median_response_time if timed else None,
            "p95_ms": _pct(entry.response_times, timed, 0.95),
            "p99_ms": _pct(entry.response_times, timed, 0.99),
            "rps": round(entry.num_requests / span, 3),
            "fail_per_s": round(entry.num_failures / span, 3),
            "avg_bytes": round(entry.avg_content_length, 1),
        }
        if base is not None:
            recent = _delta(_Snap(entry, now), base)
            row["recent_rps"] = recent["rps"]
            row["recent_p95_ms"] = recent["p95_ms"]
        return row

    def emit_endpoints(self, now: float) -> None:
        self.last_endpoints = now
        rows = []
        snaps: dict[tuple[str, str], _Snap] = {}
        for key, entry in list(self.runner.stats.entries.items()):
            if not (entry.num_requests or entry.num_failures):
                continue
            old = self.endpoint_snaps.get(key)
            base = old if old is not None and old.valid_base_for(entry) else None
            rows.append(self._row(entry, now, base))
            snaps[key] = _Snap(entry, now)
        self.endpoint_snaps = snaps
        self.emit({"type": "endpoints", "t": round(now, 3), "elapsed": round(now - self.t0, 3),
                   "rows": rows})  # fmt: skip

    def prune(self, now: float) -> None:
        """Per-second counters are kept forever by Locust: ~140 MiB/day for 20 endpoints."""
        self.last_prune = now
        horizon = int(now - self.prune_after)
        stats = self.runner.stats
        for entry in [stats.total, *list(stats.entries.values())]:
            for counter in (entry.num_reqs_per_sec, entry.num_fail_per_sec):
                for second in [s for s in counter if s < horizon]:
                    del counter[second]
        if len(stats.history) > _HISTORY_KEEP:
            del stats.history[: len(stats.history) - _HISTORY_KEEP]

    # -- stages ---------------------------------------------------------------------
    def begin_stage(self, index: int | None, stage: dict[str, Any] | None,
                    settle_s: float) -> dict[str, Any] | None:  # fmt: skip
        """Close the running stage (returning its summary) and start the next one."""
        now = time.time()
        summary = self.close_stage(now, partial=False)
        if index is not None and stage is not None:
            self.stage = {"index": index, **stage, "start": now, "manual": _CONTROL.active}
            self.stage_base = _Snap(self._total(), now)
            self.stage_settle_at = now + settle_s
            self.stage_settled = settle_s <= 0
        else:
            self.stage = None
        return summary

    def close_stage(self, now: float, partial: bool) -> dict[str, Any] | None:
        if self.stage is None or self.stage_base is None:
            return None
        total = self._total()
        base = self.stage_base
        if not base.valid_base_for(total):  # the total was replaced: it counts from zero
            base = _Snap(None, self.stage["start"])
        window = _delta(_Snap(total, now), base)
        requests = int(window["requests"])
        summary = {
            "type": "stage",
            "index": self.stage["index"],
            "name": self.stage["name"],
            "target_users": self.stage["users"],
            "start_elapsed": round(self.stage["start"] - self.t0, 3),
            "end_elapsed": round(now - self.t0, 3),
            "window_s": window["interval"],
            "requests": requests,
            "failures": window["failures"],
            "error_rate": round(window["failures"] / requests, 6) if requests else 0.0,
            "rps": window["rps"],
            "p50_ms": window["p50_ms"],
            "p95_ms": window["p95_ms"],
            "p99_ms": window["p99_ms"],
            "users": self.runner.user_count,
            "partial": partial,
            "verdict": None,
            "reason": "manual control during the stage" if self.stage.get("manual") else None,
            "manual": bool(self.stage.get("manual")),
        }
        self.stage = None
        return summary

    # -- end ------------------------------------------------------------------------
    def finish(self, exit_code: int) -> None:
        if self.finished:
            return
        now = time.time()
        self.tick(now)  # the last interval, so the ticks add up to the final totals
        stage = self.close_stage(now, partial=True)
        if stage is not None:
            self.emit(stage)
        self.finished = True
        _CONTROL.stop()
        total = self._total()
        errors = [
            {
                "method": e.method,
                "name": e.name,
                "error": str(e.error)[:500],
                "occurrences": e.occurrences,
            }
            for e in sorted(self.runner.stats.errors.values(), key=lambda e: -e.occurrences)[:50]
        ]
        record = {
            "type": "final",
            "t": round(now, 3),
            "elapsed": round(now - self.t0, 3),
            "test_started": self.test_started,
            "exit_code": exit_code,
            "stop_reason": self.stop_reason,
            "total": self._row(total, now, None),
            "errors": errors,
            "dropped": self.pipe.dropped if self.pipe else 0,
        }
        if self.pipe is not None:
            self.pipe.send_final(record)
            os.close(self.pipe.fd)
            self.pipe.closed = True


_LIVE: _Live | None = None


def _on_init(environment: Environment, runner: Runner | None = None, **_kw: Any) -> None:
    global _LIVE
    fd = int(getattr(environment.parsed_options, "diag_fd", -1) or -1)
    control_fd = int(getattr(environment.parsed_options, "diag_control_fd", -1) or -1)
    if runner is None or isinstance(runner, WorkerRunner):
        # a forked --processes worker inherited the pipes: only the master uses them
        for inherited in (fd, control_fd):
            if inherited >= 0:
                with contextlib.suppress(OSError):
                    os.close(inherited)
        return
    _LIVE = _Live(environment, runner, fd)
    if control_fd >= 0:
        _CONTROL.start(control_fd)
    # Headless with a shape, Locust joins the shape greenlet *before* it installs its own
    # SIGTERM handler, so until then SIGTERM would kill it without final stats. Make
    # SIGTERM act like Ctrl-C (which Locust handles cleanly) until its handler replaces ours.
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    import locust

    _LIVE.emit(
        {
            "type": "hello",
            "t": round(_LIVE.t0, 3),
            "pid": os.getpid(),
            "locust_version": locust.__version__,
            "role": "master" if isinstance(runner, MasterRunner) else "local",
            "shape": bool(os.environ.get(SHAPE_ENV)),
            "control": control_fd >= 0 and _SHAPE_CLASS is not None,
        }
    )


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    # Never raise here: the handler runs inside whatever greenlet was executing (maybe
    # ours, halfway through a write). Let the hub deliver the interrupt to the main
    # greenlet between switches instead, the way gevent delivers Ctrl-C.
    gevent.get_hub().loop.run_callback(_interrupt_main)


def _interrupt_main() -> None:
    if _LIVE is not None:
        _LIVE.stop_reason = _LIVE.stop_reason or "stopped"
        if _LIVE.test_started is None:  # still waiting for workers: no stats will follow
            _LIVE.finish(0)
    gevent.get_hub().parent.throw(KeyboardInterrupt)


def _on_test_start(environment: Environment, **_kw: Any) -> None:
    if _LIVE is not None and _LIVE.test_started is None:
        _LIVE.test_started = time.time()


def _on_quit(exit_code: int = 0, **_kw: Any) -> None:
    # `quit` fires after runner.quit() (the workers' last reports are in) and after
    # Locust wrote its own --json-file, so the final line matches Locust's figures.
    if _LIVE is not None:
        _LIVE.finish(exit_code)


# plain calls, not decorators: locust's EventHook.add_listener is untyped
events.init_command_line_parser.add_listener(_add_options)  # type: ignore[no-untyped-call]
events.init.add_listener(_on_init)  # type: ignore[no-untyped-call]
events.test_start.add_listener(_on_test_start)  # type: ignore[no-untyped-call]
events.quit.add_listener(_on_quit)  # type: ignore[no-untyped-call]


_SHAPE_CLASS: type[LoadTestShape] | None = None

if os.environ.get(SHAPE_ENV):
    _PLAN: dict[str, Any] = json.loads(os.environ[SHAPE_ENV])

    class ArchonDiagShape(LoadTestShape):
        """Follows the stages of archon-diag's plan; with limits, stops at the first
        stage whose measured window crosses them (the stress test's knee is the stage
        before). The diag side's override (``_CONTROL``: pause, a held user count) wins
        over the stage's users; a stage run under an override gets no verdict."""

        def __init__(self) -> None:
            super().__init__()  # type: ignore[no-untyped-call]
            self._index: int | None = -1

        def tick(self) -> tuple[int, float] | None:
            stages: list[dict[str, Any]] = _PLAN["stages"]
            elapsed = float(self.get_run_time())  # type: ignore[no-untyped-call]
            index = next((i for i, s in enumerate(stages) if elapsed < s["until_s"]), None)
            if index != self._index:
                self._index = index
                stage = stages[index] if index is not None else None
                summary = (
                    _LIVE.begin_stage(index, stage, float(_PLAN.get("settle_s") or 0.0))
                    if _LIVE is not None
                    else None
                )
                if summary is not None:
                    limits = _PLAN.get("limits")
                    if limits and not summary["manual"]:
                        reason = _crossed(summary, limits)
                        summary["verdict"] = "crossed" if reason else "ok"
                        summary["reason"] = reason
                    assert _LIVE is not None
                    _LIVE.emit(summary)
                    if summary["verdict"] == "crossed":
                        _LIVE.stop_reason = f"{summary['name']}: {summary['reason']}"
                        _LIVE.stage = None
                        return None
            if index is None:
                if _LIVE is not None and _LIVE.stop_reason is None:
                    _LIVE.stop_reason = "shape completed"
                return None
            rate = float(stages[index]["spawn_rate"])
            if _CONTROL.paused:
                return 0, max(rate, _CONTROL.pause_rate)
            if _CONTROL.users is not None:
                return _CONTROL.users, rate
            return int(stages[index]["users"]), rate

    _SHAPE_CLASS = ArchonDiagShape

    def _crossed(summary: dict[str, Any], limits: dict[str, Any]) -> str | None:
        # the same rule as probes.loadshapes.Limits.crossed_by (kept in step by a test)
        requests = int(summary["requests"])
        if requests <= 0:
            return "no responses in the window"
        rate, p95 = float(summary["error_rate"]), summary["p95_ms"]
        if rate > float(limits["max_error_rate"]):
            return f"error rate {rate:.1%} > {float(limits['max_error_rate']):.1%}"
        if p95 is not None and p95 > float(limits["max_p95_ms"]):
            return f"p95 {p95:.0f} ms > {float(limits['max_p95_ms']):.0f} ms"
        return None
