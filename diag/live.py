"""The live view of a running session: what the TUI renders and the actions it may ask for.

The Session (``diag.session``) implements ``LiveSource``; the TUI polls ``snapshot()``
about once a second from a worker thread and renders it, and sends ``Action``s back.
Everything here is plain data already analysed by ``diag`` (rows, series, ranked
findings), so the TUI does no analysis of its own and always agrees with the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from diag.findings import Finding


@dataclass(frozen=True)
class ProbeHealth:
    name: str  # "locust", "pyspy", "memray", "process", "postgres", ...
    state: str  # "ok" | "degraded" | "off" | "failed"
    note: str = ""


@dataclass(frozen=True)
class LoadPoint:
    t: float  # seconds since the run started
    users: int
    rps: float
    fails_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class EndpointRow:
    name: str  # "GET /api/projects"
    requests: int
    failures: int
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@dataclass(frozen=True)
class ProcessPoint:
    t: float
    cpu_percent: float
    rss_bytes: int


@dataclass(frozen=True)
class ProcessView:
    label: str  # "archon-server (pid 123)"
    pid: int
    alive: bool
    series: tuple[ProcessPoint, ...]
    leak_verdict: str = ""  # "not enough data", "no leak", "heap leak: +3.1 MiB/1k req", ...
    profilers: tuple[str, ...] = ()  # attached right now: "pyspy", "memray"


@dataclass(frozen=True)
class HotspotRow:
    function: str  # "compute_etag (diag/demo/server.py:88)"
    process: str
    self_percent: float
    total_percent: float
    stacks: tuple[str, ...] = ()  # top stacks through this function, root first, ";"-joined


@dataclass(frozen=True)
class StatementRow:
    queryid: int
    sql: str  # normalized, no literals
    calls: int
    total_ms: float
    mean_ms: float
    rows: int
    share_percent: float  # of database time in the window


@dataclass(frozen=True)
class PlanView:
    queryid: int
    source: str  # "auto_explain" | "generic" | "analyze"
    tree: str  # the plan tree as indented text
    tips: tuple[str, ...]
    index_advice: tuple[str, ...] = ()  # ready CREATE INDEX statements


@dataclass(frozen=True)
class WaitRow:
    wait: str  # "Lock:transactionid", "CPU", "Client:ClientRead", ...
    sessions: float  # average active sessions in that state


@dataclass(frozen=True)
class BlockingRow:
    pid: int
    blocked_by: tuple[int, ...]
    wait: str
    seconds: float
    sql: str


@dataclass(frozen=True)
class LiveSnapshot:
    elapsed_s: float
    phase: str  # "starting" | "warmup" | "measuring" | "stopping" | "done"
    shape: str  # "load", "stress", ... and its current step, e.g. "stress 3/6"
    load_state: str  # "running" | "paused" | "stopped" | "off"
    probes: tuple[ProbeHealth, ...] = ()
    load: tuple[LoadPoint, ...] = ()
    endpoints: tuple[EndpointRow, ...] = ()
    processes: tuple[ProcessView, ...] = ()
    db_time: tuple[tuple[float, float], ...] = ()  # (t, ms of database time per second)
    waits: tuple[WaitRow, ...] = ()
    blocking: tuple[BlockingRow, ...] = ()
    connections: tuple[int, int] = (0, 0)  # (in use, max_connections)
    hotspots: tuple[HotspotRow, ...] = ()
    statements: tuple[StatementRow, ...] = ()
    plans: Mapping[int, PlanView] = field(default_factory=dict)  # by queryid, when known
    findings: tuple[Finding, ...] = ()  # ranked by diag.findings.rank
    messages: tuple[str, ...] = ()  # recent notices for a status/log line, newest last


# ---- actions the TUI can ask for ------------------------------------------------------


@dataclass(frozen=True)
class StopLoad:
    pass


@dataclass(frozen=True)
class PauseLoad:
    pass


@dataclass(frozen=True)
class ResumeLoad:
    pass


@dataclass(frozen=True)
class SetUsers:
    users: int


@dataclass(frozen=True)
class AttachProfiler:
    pid: int
    profiler: str = "pyspy"  # "pyspy"


@dataclass(frozen=True)
class DetachProfiler:
    pid: int
    profiler: str = "pyspy"


@dataclass(frozen=True)
class MemrayWindow:
    pid: int
    seconds: float = 10.0


@dataclass(frozen=True)
class Explain:
    queryid: int


@dataclass(frozen=True)
class SaveReport:
    pass


Action = (
    StopLoad
    | PauseLoad
    | ResumeLoad
    | SetUsers
    | AttachProfiler
    | DetachProfiler
    | MemrayWindow
    | Explain
    | SaveReport
)


class LiveSource(Protocol):
    """What the TUI talks to. All methods are safe to call from any thread."""

    def snapshot(self) -> LiveSnapshot:
        """The current state (cheap: built from already-analysed data)."""
        ...

    def act(self, action: Action) -> str:
        """Ask for an action; returns a one-line message for the status line. Long work
        (EXPLAIN, a memray window) is started in the background and shows up in later
        snapshots (``plans``, ``messages``)."""
        ...

    def close(self) -> None:
        """Stop everything the session started (load, profilers, launched targets)."""
        ...
