"""Background load: Locust as a subprocess, its live stats as typed records.

Never imports locust: importing it monkey-patches this process with gevent, and an
asyncio loop created first then runs Locust with zero requests, silently. Instead
``LocustRun`` starts ``python -m locust --headless`` with archon-diag's plugin
(``probes/locustfiles/archon_diag_plugin.py``, passed by path) which writes one JSON line
per second to a pipe this process keeps reading. The records:

    LoadTick           every second: state, users, interval rps / failures/s / p50 / p95 /
                       p99 (exact, from histogram differences), cumulative totals
    EndpointsSnapshot  every few seconds: per-endpoint rows (cumulative so far)
    StageSummary       when a shape stage ends: its measured window and the verdict
    LoadControl        the answer to a control command (set_users / pause / resume / follow_plan)
    LoadResult         at the end: totals (Locust's own aggregate), per-endpoint rows from
                       Locust's ``--json-file`` (percentiles from its histograms), errors

Use from asyncio (a Session, the ``load`` command)::

    run = LocustRun(LoadSpec(host=url, plan=plan("load", users=10, duration_s=60)), out_dir)
    await run.start()                 # raises UsageError / PrerequisiteError
    async for tick in run.ticks():    # or run.events() for every record type
        ...
    result = await run.wait()         # or await run.stop() to end early (SIGTERM)

While it runs, ``await run.set_users(n)``, ``run.pause()``, ``run.resume()`` and
``run.follow_plan()`` override the shape through a second pipe (the control channel);
each returns Locust's acknowledgement (a ``LoadControl``) within milliseconds.

Raw artefacts (Locust's log and its stats JSON) go in ``out_dir``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeAlias

from probes.errors import PrerequisiteError, UsageError
from probes.loadshapes import ENV_VAR, ShapePlan

DEFAULT_HOST = "http://127.0.0.1:8181"
DEFAULT_AGENTS_HOST = "http://127.0.0.1:8052"
LOCUSTFILES = Path(__file__).resolve().parent / "locustfiles"
PLUGIN = LOCUSTFILES / "archon_diag_plugin.py"
ARCHON_SCENARIO = LOCUSTFILES / "archon_scenario.py"
STATS_JSON = "locust_stats"  # Locust appends ".json"
LOG_NAME = "locust.log"
_PIPE_SIZE = 1 << 20
_LINE_LIMIT = 8 << 20
_HELLO_TIMEOUT_S = 60.0
_CONTROL_TIMEOUT_S = 5.0
MODES = ("plan", "manual", "paused")


# -- records ---------------------------------------------------------------------------


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class LoadTick:
    """One second of load. Interval figures cover ``interval`` seconds before ``t``."""

    t: float  # unix time
    elapsed: float  # seconds since the plugin started
    state: str  # Locust runner state: ready, spawning, running, stopping, stopped, ...
    users: int
    target_users: int | None  # what the shape asks for now
    stage: str | None
    stage_index: int | None
    workers: int | None  # connected workers (master only)
    interval: float
    requests: int  # completed in the interval
    failures: int
    rps: float
    fail_per_s: float
    p50_ms: float | None  # None when nothing completed in the interval
    p95_ms: float | None
    p99_ms: float | None
    avg_ms: float | None
    total_requests: int  # cumulative
    total_failures: int
    dropped: int  # lines the plugin dropped because the pipe was full
    # who sets the users: "plan" (the shape), "manual" (set_users), "paused" (pause)
    mode: str = "plan"

    def to_json(self) -> dict[str, Any]:
        return {"type": "tick", **asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LoadTick:
        return cls(
            t=float(data["t"]),
            elapsed=float(data["elapsed"]),
            state=str(data["state"]),
            users=int(data["users"]),
            target_users=None if data.get("target_users") is None else int(data["target_users"]),
            stage=data.get("stage"),
            stage_index=None if data.get("stage_index") is None else int(data["stage_index"]),
            workers=None if data.get("workers") is None else int(data["workers"]),
            interval=float(data["interval"]),
            requests=int(data["requests"]),
            failures=int(data["failures"]),
            rps=float(data["rps"]),
            fail_per_s=float(data["fail_per_s"]),
            p50_ms=_opt_float(data.get("p50_ms")),
            p95_ms=_opt_float(data.get("p95_ms")),
            p99_ms=_opt_float(data.get("p99_ms")),
            avg_ms=_opt_float(data.get("avg_ms")),
            total_requests=int(data["total_requests"]),
            total_failures=int(data["total_failures"]),
            dropped=int(data.get("dropped", 0)),
            mode=str(data.get("mode") or "plan"),
        )


@dataclass(frozen=True)
class EndpointRow:
    """Stats of one (method, name), or of the aggregate (method "", name "Aggregated").

    Counts and percentiles cover the run so far; ``rps`` is requests per second of test
    time; ``recent_*`` (live snapshots only) cover the last snapshot window.
    """

    method: str
    name: str
    requests: int
    failures: int
    avg_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    rps: float
    fail_per_s: float
    avg_bytes: float = 0.0
    recent_rps: float | None = None
    recent_p95_ms: float | None = None
    histogram: tuple[tuple[int, int], ...] = ()  # (bucketed ms, count), final rows only

    @property
    def label(self) -> str:
        return f"{self.method} {self.name}".strip()

    @property
    def fail_ratio(self) -> float:
        return self.failures / self.requests if self.requests else (1.0 if self.failures else 0.0)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["histogram"] = [list(pair) for pair in self.histogram]
        if not self.histogram:
            del data["histogram"]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EndpointRow:
        return cls(
            method=str(data.get("method") or ""),
            name=str(data["name"]),
            requests=int(data["requests"]),
            failures=int(data["failures"]),
            avg_ms=float(data.get("avg_ms") or 0.0),
            min_ms=float(data.get("min_ms") or 0.0),
            max_ms=float(data.get("max_ms") or 0.0),
            p50_ms=_opt_float(data.get("p50_ms")),
            p95_ms=_opt_float(data.get("p95_ms")),
            p99_ms=_opt_float(data.get("p99_ms")),
            rps=float(data.get("rps") or 0.0),
            fail_per_s=float(data.get("fail_per_s") or 0.0),
            avg_bytes=float(data.get("avg_bytes") or 0.0),
            recent_rps=_opt_float(data.get("recent_rps")),
            recent_p95_ms=_opt_float(data.get("recent_p95_ms")),
            histogram=tuple((int(k), int(v)) for k, v in data.get("histogram") or ()),
        )


@dataclass(frozen=True)
class EndpointsSnapshot:
    t: float
    elapsed: float
    rows: tuple[EndpointRow, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "endpoints",
            "t": self.t,
            "elapsed": self.elapsed,
            "rows": [r.to_json() for r in self.rows],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EndpointsSnapshot:
        rows = tuple(EndpointRow.from_json(r) for r in data.get("rows") or ())
        return cls(float(data["t"]), float(data["elapsed"]), rows)


@dataclass(frozen=True)
class StageSummary:
    """One shape stage: figures over its measured window (the stage minus its settle time)."""

    index: int
    name: str
    target_users: int
    start_elapsed: float
    end_elapsed: float
    window_s: float
    requests: int
    failures: int
    error_rate: float
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    users: int  # users running when the stage ended
    partial: bool  # the run stopped before the stage's planned end
    verdict: str | None  # "ok" / "crossed" against the stress limits, None without limits
    reason: str | None
    manual: bool = False  # paused or manual users during the stage: no verdict, not a step

    def to_json(self) -> dict[str, Any]:
        return {"type": "stage", **asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StageSummary:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class LoadControl:
    """Locust's answer to one control command (it applies it at the shape's next tick,
    within about a second): the override now in force and the users it asks for."""

    t: float
    elapsed: float
    seq: int
    cmd: str  # "users" | "pause" | "resume" | "plan"
    ok: bool
    error: str | None
    mode: str  # "plan" | "manual" | "paused" after the command
    users: int | None  # the held user count (set_users), kept through a pause
    target_users: int | None  # what the shape asks for now

    def to_json(self) -> dict[str, Any]:
        return {"type": "control", **asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LoadControl:
        return cls(
            t=float(data["t"]),
            elapsed=float(data["elapsed"]),
            seq=int(data["seq"]),
            cmd=str(data["cmd"]),
            ok=bool(data["ok"]),
            error=None if data.get("error") is None else str(data["error"]),
            mode=str(data.get("mode") or "plan"),
            users=None if data.get("users") is None else int(data["users"]),
            target_users=None if data.get("target_users") is None else int(data["target_users"]),
        )


@dataclass(frozen=True)
class ErrorRow:
    method: str
    name: str
    error: str
    occurrences: int


LoadRecord: TypeAlias = LoadTick | EndpointsSnapshot | StageSummary


@dataclass(frozen=True)
class LoadResult:
    host: str
    plan: ShapePlan
    started_at: float | None  # unix time the test started
    duration_s: float
    exit_code: int | None  # Locust's own
    stop_reason: str | None  # "shape completed", "step 3: p95 ... > ...", "stopped", ...
    stopped_early: bool  # stop() was called before the shape ended
    total: EndpointRow
    endpoints: tuple[EndpointRow, ...]
    errors: tuple[ErrorRow, ...]
    stages: tuple[StageSummary, ...]
    ticks: tuple[LoadTick, ...] = field(repr=False)
    dropped_lines: int
    stats_json: str | None  # Locust's own --json-file
    log_path: str
    tick_count: int | None = None  # ticks seen, when ``ticks`` were not kept (None: all kept)

    @property
    def all_refused(self) -> bool:
        """Every request failed and the errors say the connection was refused."""
        if self.total.requests == 0 or self.total.failures < self.total.requests:
            return False
        return bool(self.errors) and all(_is_refused(e.error) for e in self.errors)

    def to_json(self, timeline: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": "result",
            "host": self.host,
            "shape": self.plan.to_json(),
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "exit_code": self.exit_code,
            "stop_reason": self.stop_reason,
            "stopped_early": self.stopped_early,
            "total": self.total.to_json(),
            "endpoints": [e.to_json() for e in self.endpoints],
            "errors": [asdict(e) for e in self.errors],
            "stages": [asdict(s) for s in self.stages],
            "ticks": len(self.ticks) if self.tick_count is None else self.tick_count,
            "dropped_lines": self.dropped_lines,
            "stats_json": self.stats_json,
            "log_path": self.log_path,
        }
        if timeline:
            data["timeline"] = [t.to_json() for t in self.ticks]
        return data


def _is_refused(error: str) -> bool:
    text = error.lower()
    return "connectionrefused" in text or "connection refused" in text or "errno 111" in text


# -- histograms (Locust's own algorithm, so the figures match its reports) -------------


def percentile(histogram: Mapping[int, int], count: int, q: float) -> int | None:
    """The response time ``q`` of ``count`` requests finished within (Locust's rule).

    >>> percentile({10: 90, 100: 10}, 100, 0.95), percentile({}, 0, 0.5)
    (100, None)
    """
    if count <= 0:
        return None
    wanted = int(count * q)
    seen = 0
    for bucket in sorted(histogram, reverse=True):
        seen += histogram[bucket]
        if count - seen <= wanted:
            return bucket
    return 0


def merge_histograms(histograms: Iterable[Mapping[int, int]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for hist in histograms:
        for bucket, n in hist.items():
            merged[bucket] = merged.get(bucket, 0) + n
    return merged


def _row_from_stats(
    method: str,
    name: str,
    *,
    requests: int,
    none_requests: int,
    failures: int,
    total_rt: float,
    min_rt: float | None,
    max_rt: float,
    content: float,
    hist: dict[int, int],
    span_s: float,
) -> EndpointRow:
    timed = requests - none_requests
    p50: float | None = percentile(hist, timed, 0.5)
    if p50 is not None:  # Locust clamps its median to [min, max]
        p50 = max_rt if p50 > max_rt else p50
        p50 = min_rt if min_rt is not None and p50 < min_rt else p50
    span = max(span_s, 1e-6)
    return EndpointRow(
        method=method,
        name=name,
        requests=requests,
        failures=failures,
        avg_ms=round(total_rt / timed, 3) if timed else 0.0,
        min_ms=round(min_rt or 0.0, 3),
        max_ms=round(max_rt, 3),
        p50_ms=p50,
        p95_ms=percentile(hist, timed, 0.95),
        p99_ms=percentile(hist, timed, 0.99),
        rps=round(requests / span, 3),
        fail_per_s=round(failures / span, 3),
        avg_bytes=round(content / requests, 1) if requests else 0.0,
        histogram=tuple(sorted(hist.items())),
    )


def read_locust_json(path: Path, span_s: float) -> tuple[tuple[EndpointRow, ...], EndpointRow]:
    """Per-endpoint rows and their aggregate from Locust's ``--json-file`` output."""
    entries = json.loads(path.read_text())
    rows: list[EndpointRow] = []
    agg = {"requests": 0, "none": 0, "failures": 0, "total_rt": 0.0, "content": 0.0}
    mins: list[float] = []
    maxs: list[float] = []
    hists: list[dict[int, int]] = []
    for e in entries:
        hist = {int(k): int(v) for k, v in (e.get("response_times") or {}).items()}
        row = _row_from_stats(
            str(e.get("method") or ""),
            str(e["name"]),
            requests=int(e["num_requests"]),
            none_requests=int(e.get("num_none_requests") or 0),
            failures=int(e["num_failures"]),
            total_rt=float(e.get("total_response_time") or 0.0),
            min_rt=_opt_float(e.get("min_response_time")),
            max_rt=float(e.get("max_response_time") or 0.0),
            content=float(e.get("total_content_length") or 0.0),
            hist=hist,
            span_s=span_s,
        )
        rows.append(row)
        agg["requests"] += row.requests
        agg["none"] += int(e.get("num_none_requests") or 0)
        agg["failures"] += row.failures
        agg["total_rt"] += float(e.get("total_response_time") or 0.0)
        agg["content"] += float(e.get("total_content_length") or 0.0)
        if e.get("min_response_time") is not None:
            mins.append(float(e["min_response_time"]))
        maxs.append(float(e.get("max_response_time") or 0.0))
        hists.append(hist)
    total = _row_from_stats(
        "",
        "Aggregated",
        requests=int(agg["requests"]),
        none_requests=int(agg["none"]),
        failures=int(agg["failures"]),
        total_rt=agg["total_rt"],
        min_rt=min(mins) if mins else None,
        max_rt=max(maxs, default=0.0),
        content=agg["content"],
        hist=merge_histograms(hists),
        span_s=span_s,
    )
    rows.sort(key=lambda r: (-r.requests, r.name, r.method))
    return tuple(rows), total


def parse_line(line: bytes | str) -> LoadRecord | LoadControl | dict[str, Any] | None:
    """A typed record, the raw dict for ``hello``/``final``, or None for garbage."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    kind = data.get("type")
    try:
        if kind == "tick":
            return LoadTick.from_json(data)
        if kind == "endpoints":
            return EndpointsSnapshot.from_json(data)
        if kind == "stage":
            return StageSummary.from_json(data)
        if kind == "control":
            return LoadControl.from_json(data)
    except (KeyError, TypeError, ValueError):
        return None
    return data if kind in ("hello", "final") else None


# -- what to run -----------------------------------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    plan: ShapePlan
    host: str = DEFAULT_HOST
    locustfile: Path | None = None  # None: the shipped Archon scenario
    agents_host: str | None = DEFAULT_AGENTS_HOST  # Archon scenario only; None: no agent runs
    processes: int | None = None  # --processes N on this host
    expect_workers: int | None = None  # master mode: wait for N remote workers
    master_bind_host: str = "127.0.0.1"
    master_port: int | None = None  # None: 5557 with expect_workers, a free port with processes
    endpoints_every_s: float = 5.0
    prune_after_s: float = 300.0
    python: str = sys.executable
    extra_args: tuple[str, ...] = ()

    def locustfiles(self) -> list[Path]:
        # the plugin first: with a shape plan, its shape is the one Locust picks
        return [PLUGIN, Path(self.locustfile).resolve() if self.locustfile else ARCHON_SCENARIO]


def locust_available(python: str = sys.executable) -> bool:
    """Whether ``python`` can import locust (checked in a child: never import it here)."""
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('locust') is None)"
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_command(spec: LoadSpec, master_host: str) -> list[str]:
    """The command that starts one worker on another host for a master run of ``spec``."""
    port = spec.master_port or 5557
    return [
        "python", "-m", "locust", "--worker", "--master-host", master_host,
        "--master-port", str(port), "-f", ",".join(str(p) for p in spec.locustfiles()),
    ]  # fmt: skip


def build_command(
    spec: LoadSpec, fd: int, json_base: Path, control_fd: int | None = None
) -> list[str]:
    cmd = [
        spec.python, "-m", "locust", "--headless",
        "-f", ",".join(str(p) for p in spec.locustfiles()),
        "--host", spec.host,
        "--json-file", str(json_base),  # never together with --json (the file stays [])
        "--only-summary", "--exit-code-on-error", "0",
        "--diag-fd", str(fd),
        *(["--diag-control-fd", str(control_fd)] if control_fd is not None else []),
        "--diag-endpoints-every", str(spec.endpoints_every_s),
        "--diag-prune-after", str(spec.prune_after_s),
    ]  # fmt: skip
    if spec.locustfile is None and spec.agents_host is not None:
        cmd += ["--agents-host", spec.agents_host]
    if spec.processes:
        port = spec.master_port or free_port()
        # the forked workers connect to --master-port; keep the master on loopback
        cmd += ["--processes", str(spec.processes), "--master-bind-host", "127.0.0.1",
                "--master-bind-port", str(port), "--master-port", str(port)]  # fmt: skip
    elif spec.expect_workers:
        port = spec.master_port or 5557
        cmd += ["--master", "--expect-workers", str(spec.expect_workers),
                "--master-bind-host", spec.master_bind_host,
                "--master-bind-port", str(port)]  # fmt: skip
    return cmd + list(spec.extra_args)


# -- the run ---------------------------------------------------------------------------


class LocustRun:
    """One Locust subprocess and its live stream. Not reusable: one run per object."""

    def __init__(self, spec: LoadSpec, out_dir: Path, keep_ticks: bool = True) -> None:
        """``keep_ticks=False``: the caller records every tick itself (a Session writes
        them to its bundle), so ``timeline`` and the result's ``ticks`` stay empty instead
        of growing by one tick a second for the whole run."""
        self.spec = spec
        self.out_dir = Path(out_dir)
        self.log_path = self.out_dir / LOG_NAME
        self.json_base = self.out_dir / STATS_JSON
        self.keep_ticks = keep_ticks
        self.timeline: list[LoadTick] = []
        self._first_tick: LoadTick | None = None
        self._last_tick: LoadTick | None = None
        self._tick_count = 0
        self.stages: list[StageSummary] = []
        self.latest_endpoints: EndpointsSnapshot | None = None
        self.hello: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None
        self.controls: list[LoadControl] = []  # every acknowledged command, in order
        self._control_fd: int | None = None  # our end of the control pipe
        self._control_seq = 0
        self._acks: dict[int, asyncio.Future[LoadControl]] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._transport: asyncio.ReadTransport | None = None
        self._subscribers: list[asyncio.Queue[LoadRecord | None]] = []
        self._hello_seen = asyncio.Event()
        self._stopping = False
        self._result: LoadResult | None = None

    # -- lifecycle --------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def latest(self) -> LoadTick | None:
        return self._last_tick

    def command(self, fd: int = 3, control_fd: int | None = None) -> list[str]:
        return build_command(self.spec, fd, self.json_base, control_fd)

    async def start(self) -> None:
        """Start Locust; return once its plugin says hello (raise if it never does)."""
        if self._proc is not None:
            raise RuntimeError("LocustRun.start() called twice")
        spec = self.spec
        if spec.locustfile is not None:
            path = Path(spec.locustfile)
            if not path.is_file():
                raise UsageError(f"locustfile {path} does not exist: pass a Python file")
            if path.suffix != ".py":
                raise UsageError(f"locustfile {path} is not a .py file")
        if not await asyncio.to_thread(locust_available, spec.python):
            raise PrerequisiteError(
                f"locust is not installed for {spec.python}: run `{spec.python} -m pip install "
                "locust` (or `make setup`)"
            )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env[ENV_VAR] = spec.plan.dumps()
        read_fd, write_fd = os.pipe()
        # the control channel: Locust reads commands from ctl_read; we keep ctl_write
        ctl_read, ctl_write = os.pipe()
        os.set_blocking(ctl_write, False)
        with contextlib.suppress(OSError, AttributeError):
            import fcntl

            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)  # Linux only
        try:
            with open(self.log_path, "wb") as log:
                self._proc = await asyncio.create_subprocess_exec(
                    *self.command(write_fd, ctl_read),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(write_fd, ctl_read),
                    env=env,
                    cwd=str(self.out_dir),
                    start_new_session=True,  # Ctrl-C reaches us; we stop Locust with SIGTERM
                )
        except BaseException:
            os.close(read_fd)
            os.close(ctl_write)
            raise
        finally:
            os.close(write_fd)
            os.close(ctl_read)
        self._control_fd = ctl_write
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_LINE_LIMIT)
        pipe = os.fdopen(read_fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        self._transport = transport
        self._reader = asyncio.create_task(self._read(reader))
        exited = asyncio.create_task(self._proc.wait())
        hello = asyncio.create_task(self._hello_seen.wait())
        try:
            await asyncio.wait(
                {exited, hello}, timeout=_HELLO_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            hello.cancel()
        if not self._hello_seen.is_set():
            if not exited.done():
                exited.cancel()
                await self._kill()
            else:
                await self._reader
            raise self._startup_error()

    async def stop(self, timeout: float = 30.0) -> LoadResult:
        """End the run early: SIGTERM (Locust stops users, writes its final stats)."""
        proc = self._proc
        if proc is None:
            raise RuntimeError("LocustRun.stop() before start()")
        if proc.returncode is None:
            self._stopping = True
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except asyncio.TimeoutError:
                await self._kill()
        return await self.wait()

    async def wait(self) -> LoadResult:
        """Wait for the run to end by itself (the shape finished) and return the result."""
        if self._result is not None:
            return self._result
        if self._proc is None or self._reader is None:
            raise RuntimeError("LocustRun.wait() before start()")
        await self._proc.wait()
        await self._reader
        self._close_control()
        self._result = await asyncio.to_thread(self._build_result)
        return self._result

    async def aclose(self) -> None:
        """Make sure nothing is left running (for finally blocks and cancellation)."""
        if self._proc is not None and self._proc.returncode is None:
            await self.stop(timeout=10.0)
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
        self._close_control()

    async def __aenter__(self) -> LocustRun:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _kill(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: Locust and its workers
        await proc.wait()

    # -- control ----------------------------------------------------------------------
    async def set_users(self, users: int, timeout: float = _CONTROL_TIMEOUT_S) -> LoadControl:
        """Hold ``users`` users (at the current stage's spawn rate) from now on, until
        ``follow_plan()``; ends a pause. 0 is allowed (idle without pausing)."""
        if isinstance(users, bool) or not isinstance(users, int) or users < 0:
            raise UsageError(f"users must be a whole number >= 0, not {users!r}")
        return await self._control({"cmd": "users", "users": users}, timeout)

    async def pause(self, timeout: float = _CONTROL_TIMEOUT_S) -> LoadControl:
        """Stop every user at once (0 users, no new requests) until ``resume()``."""
        return await self._control({"cmd": "pause"}, timeout)

    async def resume(self, timeout: float = _CONTROL_TIMEOUT_S) -> LoadControl:
        """End a pause: back to the last ``set_users`` count, or else to the plan."""
        return await self._control({"cmd": "resume"}, timeout)

    async def follow_plan(self, timeout: float = _CONTROL_TIMEOUT_S) -> LoadControl:
        """Drop every override: the shape's stages set the users again."""
        return await self._control({"cmd": "plan"}, timeout)

    def _check_controllable(self) -> None:
        proc = self._proc
        if proc is None:
            raise UsageError("the load is not running yet: start it first")
        if proc.returncode is not None or self._stopping or self.final is not None:
            raise UsageError("the load is not running any more (it ended or was stopped)")
        if self._control_fd is None or (self.hello is not None and not self.hello.get("control")):
            raise UsageError("this load has no control channel (no archon-diag shape running)")

    async def _control(self, command: dict[str, Any], timeout: float) -> LoadControl:
        """Send one command; return Locust's answer (never blocks the loop for long)."""
        self._check_controllable()
        assert self._control_fd is not None
        self._control_seq += 1
        seq = self._control_seq
        line = (json.dumps({**command, "seq": seq}, separators=(",", ":")) + "\n").encode()
        ack: asyncio.Future[LoadControl] = asyncio.get_running_loop().create_future()
        self._acks[seq] = ack
        try:
            try:
                written = os.write(self._control_fd, line)  # tiny, non-blocking
            except BlockingIOError:
                written = 0
            except OSError as exc:  # EPIPE: Locust has gone
                raise UsageError("the load is not running any more (it ended)") from exc
            if written != len(line):
                raise PrerequisiteError(
                    f"locust is not reading its control commands (log: {self.log_path})"
                )
            try:
                answer = await asyncio.wait_for(ack, timeout)
            except asyncio.TimeoutError:
                raise PrerequisiteError(
                    f"locust did not answer {command['cmd']!r} within {timeout:g}s "
                    f"(log: {self.log_path})"
                ) from None
        finally:
            self._acks.pop(seq, None)
        if not answer.ok:
            raise UsageError(f"cannot {_CONTROL_VERBS.get(answer.cmd, answer.cmd)}: {answer.error}")
        return answer

    def _close_control(self) -> None:
        if self._control_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._control_fd)
            self._control_fd = None

    # -- the stream -------------------------------------------------------------------
    def events(self) -> AsyncIterator[LoadRecord]:
        """Every record from now on (ticks, endpoint snapshots, stages) until the end."""
        queue: asyncio.Queue[LoadRecord | None] = asyncio.Queue()
        if self._reader is not None and self._reader.done():
            queue.put_nowait(None)
        else:
            self._subscribers.append(queue)
        return self._drain(queue)

    async def ticks(self) -> AsyncIterator[LoadTick]:
        """Only the 1 Hz ticks."""
        async for record in self.events():
            if isinstance(record, LoadTick):
                yield record

    async def _drain(self, queue: asyncio.Queue[LoadRecord | None]) -> AsyncIterator[LoadRecord]:
        try:
            while (record := await queue.get()) is not None:
                yield record
        finally:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(queue)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # a line over the limit: skip it, keep the stream
                    continue
                if not line:
                    break
                record = parse_line(line)
                if record is None:
                    continue
                if isinstance(record, LoadControl):
                    self.controls.append(record)
                    waiter = self._acks.get(record.seq)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(record)
                    continue
                if isinstance(record, dict):
                    if record.get("type") == "hello":
                        self.hello = record
                        self._hello_seen.set()
                    else:
                        self.final = record
                    continue
                if isinstance(record, LoadTick):
                    self._first_tick = self._first_tick or record
                    self._last_tick = record
                    self._tick_count += 1
                    if self.keep_ticks:
                        self.timeline.append(record)
                elif isinstance(record, StageSummary):
                    self.stages.append(record)
                else:
                    self.latest_endpoints = record
                for queue in self._subscribers:
                    queue.put_nowait(record)
        finally:
            for queue in self._subscribers:
                queue.put_nowait(None)
            for waiter in self._acks.values():
                if not waiter.done():
                    waiter.set_exception(
                        UsageError("the load ended before locust answered the command")
                    )
            if self._transport is not None:
                self._transport.close()

    # -- results ----------------------------------------------------------------------
    def _log_tail(self, lines: int = 40) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [ln.rstrip() for ln in text.splitlines() if ln.strip()][-lines:]

    def _startup_error(self) -> Exception:
        code = self._proc.returncode if self._proc else None
        tail = self._log_tail()
        last = _meaningful_line(tail) or f"exit code {code}"
        where = f"(log: {self.log_path})"
        if self.spec.locustfile is not None:
            # Locust tries pytest-style loading only when it found no User class; that
            # fallback can itself crash (it reads the pytest config around each file)
            if any("No User class found" in ln or "load_locustfile_pytest" in ln for ln in tail):
                return UsageError(f"locustfile {self.spec.locustfile} defines no User class")
            return UsageError(f"locustfile {self.spec.locustfile} failed to start: {last} {where}")
        if code is None:
            return PrerequisiteError(f"locust did not start within {_HELLO_TIMEOUT_S:.0f}s {where}")
        return PrerequisiteError(f"locust failed to start: {last} {where}")

    def _build_result(self) -> LoadResult:
        final = self.final or {}
        started = final.get("test_started")
        end_t = float(final.get("t") or (self.latest.t if self.latest else time.time()))
        first = self._first_tick
        start_t = float(started) if started else (first.t if first else end_t)
        span = max(end_t - start_t, 1e-6)
        json_path = self.json_base.with_name(self.json_base.name + ".json")
        endpoints: tuple[EndpointRow, ...] = ()
        json_total: EndpointRow | None = None
        if json_path.is_file():
            try:
                endpoints, json_total = read_locust_json(json_path, span)
            except (ValueError, KeyError, TypeError):
                endpoints, json_total = (), None
        if not endpoints and self.latest_endpoints is not None:
            endpoints = self.latest_endpoints.rows
        if final.get("total"):
            total = EndpointRow.from_json(final["total"])
            if json_total is not None:  # same counts; keep the histogram for analysis
                total = EndpointRow(**{**total.__dict__, "histogram": json_total.histogram})
        elif json_total is not None:
            total = json_total
        else:
            last = self.latest
            total = EndpointRow(
                "", "Aggregated", last.total_requests if last else 0,
                last.total_failures if last else 0, 0.0, 0.0, 0.0, None, None, None, 0.0, 0.0,
            )  # fmt: skip
        errors = tuple(
            ErrorRow(
                str(e.get("method") or ""), str(e["name"]), str(e["error"]), int(e["occurrences"])
            )
            for e in final.get("errors") or ()
        )
        stop_reason = final.get("stop_reason")
        if self._stopping and not stop_reason:
            stop_reason = "stopped"
        return LoadResult(
            host=self.spec.host,
            plan=self.spec.plan,
            started_at=float(started) if started else None,
            duration_s=round(span, 3),
            exit_code=self._proc.returncode if self._proc else None,
            stop_reason=stop_reason or ("locust exited without final stats" if not final else None),
            stopped_early=self._stopping and stop_reason == "stopped",  # not a shape ending
            total=total,
            endpoints=endpoints,
            errors=errors,
            stages=tuple(self.stages),
            ticks=tuple(self.timeline),
            dropped_lines=int(final.get("dropped") or (self.latest.dropped if self.latest else 0)),
            stats_json=str(json_path) if json_path.is_file() else None,
            log_path=str(self.log_path),
            tick_count=None if self.keep_ticks else self._tick_count,
        )


_CONTROL_VERBS = {"users": "set the users", "pause": "pause the load",
                  "resume": "resume the load", "plan": "return to the plan"}  # fmt: skip


def _meaningful_line(lines: list[str]) -> str | None:
    """The line of a Locust log that says what went wrong (an exception, an error)."""
    for line in reversed(lines):
        text = line.split("/ERROR/", 1)[-1].split(": ", 1)[-1] if "/ERROR/" in line else line
        if line.startswith(("Traceback", "  File ", "    ")):
            continue
        if "Error" in line or "Exception" in line or "/ERROR/" in line or "error" in line:
            return text.strip()[:300]
    return lines[-1].strip()[:300] if lines else None
