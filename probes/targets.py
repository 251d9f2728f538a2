"""Target discovery: turn a target SPEC into live processes.

SPECs: ``PID``, ``match:REGEX`` (command line), ``port:N`` (listening socket),
``preset:archon`` (the Archon services, or our stand-in), ``launch:CMD`` and
``scalene:CMD`` (started by the tool: see ``launch``; ``scalene:`` is run by
``probes.scalene``).

Supervisors are followed to the processes that run the app: a ``--reload`` parent
(WatchFiles/StatReload) to its spawned child, a uvicorn ``--workers`` or gunicorn
master to its workers. This module only finds processes; it never signals one it did
not start.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from probes.errors import PrerequisiteError, UsageError


@dataclass(frozen=True)
class Target:
    pid: int
    name: str
    cmdline: tuple[str, ...]
    spec: str
    role: str = ""  # e.g. "archon-server", "worker of 1234"

    @property
    def label(self) -> str:
        return f"{self.role or self.name} (pid {self.pid})"

    def to_json(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "name": self.name,
            "cmdline": list(self.cmdline),
            "spec": self.spec,
            "role": self.role,
            "label": self.label,
        }


# (role, command-line pattern, port) for preset:archon. The stand-in's processes carry
# diag.demo.server / diag.demo.agents in their command line.
ARCHON_SERVICES: tuple[tuple[str, str, int], ...] = (
    ("archon-server", r"src\.server\.main:app|diag\.demo\.server", 8181),
    ("archon-mcp", r"src\.mcp_server\.mcp_server|diag\.demo\.mcp", 8051),
    ("archon-agents", r"src\.agents\.server:app|diag\.demo\.agents", 8052),
    ("agent-work-orders", r"src\.agent_work_orders|diag\.demo\.work_orders", 8053),
)

_SUPERVISOR_FLAGS = ("--reload", "--workers")
_SPAWN_MARKERS = ("multiprocessing.spawn", "spawn_main", "multiprocessing.forkserver")
_HELPER_MARKERS = ("resource_tracker", "semaphore_tracker", "forkserver import")


def _target(pid: int, spec: str, name: str | None = None, role: str = "") -> Target:
    try:
        proc = psutil.Process(pid)
        cmdline = tuple(proc.cmdline())
        return Target(pid=pid, name=name or proc.name(), cmdline=cmdline, spec=spec, role=role)
    except psutil.NoSuchProcess:
        raise PrerequisiteError(f"no process with PID {pid} (target {spec!r})") from None
    except psutil.AccessDenied:
        raise PrerequisiteError(
            f"no permission to inspect PID {pid}; run as its owner or as root"
        ) from None


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


def _is_supervisor(cmd: list[str]) -> bool:
    text = " ".join(cmd)
    return any(flag in cmd or f"{flag}=" in text for flag in _SUPERVISOR_FLAGS) or (
        "gunicorn" in text
    )


def app_processes(proc: psutil.Process) -> list[psutil.Process]:
    """The processes that run the app behind ``proc``: itself, or its workers/child.

    A supervisor (``--reload``, ``--workers``, gunicorn) runs the app in children that are
    spawned by multiprocessing or forked with the same command line; those are returned
    (recursively), helper children such as multiprocessing's resource tracker are not.
    """
    cmd = _cmdline(proc)
    if not _is_supervisor(cmd):
        return [proc]
    try:
        children = proc.children()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return [proc]
    apps: list[psutil.Process] = []
    for child in children:
        child_cmd = _cmdline(child)
        text = " ".join(child_cmd)
        if any(marker in text for marker in _HELPER_MARKERS):
            continue
        if any(marker in text for marker in _SPAWN_MARKERS) or child_cmd == cmd:
            apps.extend(app_processes(child) if child_cmd == cmd else [child])
    return apps or [proc]


def _expand(proc: psutil.Process, spec: str, role: str = "") -> list[Target]:
    apps = app_processes(proc)
    out: list[Target] = []
    for app in apps:
        sub_role = role
        if app.pid != proc.pid:
            sub_role = f"{role or proc.name()} worker" if len(apps) > 1 else role or ""
        try:
            out.append(_target(app.pid, spec, role=sub_role))
        except PrerequisiteError:
            continue  # exited between listing and inspection
    return out


def _dedupe(targets: list[Target]) -> list[Target]:
    seen: set[int] = set()
    out = []
    for t in targets:
        if t.pid not in seen:
            seen.add(t.pid)
            out.append(t)
    return out


def _supervised(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Drop processes whose parent is also in the list (keep the top, expand later)."""
    pids = {p.pid for p in procs}
    keep = []
    for p in procs:
        try:
            parent = p.ppid()
        except psutil.NoSuchProcess:
            continue
        if parent not in pids:
            keep.append(p)
    return keep


def _match(pattern: str, spec: str, role: str = "") -> list[Target]:
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"invalid regular expression in {spec!r}: {exc}") from None
    me = psutil.Process()
    mine = {me.pid, *(p.pid for p in me.parents())}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if proc.pid in mine or not cmd:
            continue
        if regex.search(" ".join(cmd)):
            found.append(proc)
    out: list[Target] = []
    for proc in _supervised(found):
        out.extend(_expand(proc, spec, role))
    return _dedupe(out)


def listening_pids(port: int) -> list[int]:
    """PIDs with a TCP socket listening on ``port`` (any address)."""
    pids: set[int] = set()
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:  # not root: look at the processes we can see
        for proc in psutil.process_iter():
            try:
                for c in proc.net_connections(kind="tcp"):
                    if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
                        pids.add(proc.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return sorted(pids)
    for conn in conns:
        laddr = conn.laddr
        listening = conn.status == psutil.CONN_LISTEN and isinstance(laddr, tuple) and laddr
        if listening and getattr(laddr, "port", None) == port and conn.pid is not None:
            pids.add(conn.pid)
    return sorted(pids)


def _supervisor_of(proc: psutil.Process) -> psutil.Process:
    """The supervisor (reloader, --workers/gunicorn master) ``proc`` is an app process of,
    or ``proc`` itself: a shared listening socket is reported under one worker only."""
    try:
        parent = proc.parent()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return proc
    if parent is None or not _is_supervisor(_cmdline(parent)):
        return proc
    if proc.pid in {p.pid for p in app_processes(parent)}:
        return _supervisor_of(parent)
    return proc


def _port(port: int, spec: str, role: str = "") -> list[Target]:
    procs = []
    for pid in listening_pids(port):
        try:
            procs.append(_supervisor_of(psutil.Process(pid)))
        except psutil.NoSuchProcess:
            continue
    # A listening socket is shared by a master and its forked workers: start from the top.
    out: list[Target] = []
    for proc in _supervised(procs):
        out.extend(_expand(proc, spec, role))
    return _dedupe(out)


def _is_python(proc_cmd: tuple[str, ...]) -> bool:
    return any("python" in Path(part).name for part in proc_cmd[:2]) or any(
        part.endswith((".py", "uvicorn", "gunicorn")) for part in proc_cmd[:3]
    )


def _preset_archon(spec: str) -> list[Target]:
    out: list[Target] = []
    for role, pattern, port in ARCHON_SERVICES:
        found = _match(pattern, spec, role)
        if not found:
            found = [t for t in _port(port, spec, role) if _is_python(t.cmdline)]
        out.extend(found)
    return _dedupe(out)


def parse_launch(spec: str) -> list[str]:
    """The argv of a ``launch:CMD`` or ``scalene:CMD`` spec."""
    _, _, cmd = spec.partition(":")
    argv = shlex.split(cmd)
    if not argv:
        raise UsageError(f"empty command in target {spec!r}: use e.g. launch:'python app.py'")
    return argv


def is_launch_spec(spec: str) -> bool:
    return spec.strip().startswith(("launch:", "scalene:"))


def resolve(spec: str) -> list[Target]:
    """The running processes a SPEC names (at least one, else an error).

    ``launch:`` and ``scalene:`` specs start a process; use ``launch`` /
    ``probes.scalene`` for those.
    """
    text = spec.strip()
    kind, sep, value = text.partition(":")
    if text.isdigit():
        found = _expand(psutil.Process(int(text)), spec) if psutil.pid_exists(int(text)) else []
        return found or [_target(int(text), spec)]
    if not sep:
        raise UsageError(
            f"unsupported target {spec!r}: use PID, match:REGEX, port:N, preset:archon, "
            "launch:CMD or scalene:CMD"
        )
    if kind == "match":
        found = _match(value, spec)
        what = f"no process command line matches {value!r}"
    elif kind == "port":
        if not value.isdigit():
            raise UsageError(f"invalid port in target {spec!r}: use port:N")
        found = _port(int(value), spec)
        what = f"no process listens on port {value} (or no permission to see it: run as root)"
    elif kind == "preset":
        if value != "archon":
            raise UsageError(f"unknown preset {value!r} in {spec!r}: the preset is archon")
        found = _preset_archon(spec)
        what = "no Archon process found (archon-server 8181, archon-mcp 8051, archon-agents 8052)"
    elif kind in ("launch", "scalene"):
        raise UsageError(f"target {spec!r} is started by the tool, not resolved; use profile/run")
    else:
        raise UsageError(f"unknown target kind {kind!r} in {spec!r}")
    if not found:
        raise PrerequisiteError(f"{what} (target {spec!r}); check that it is running")
    return found


@dataclass
class Launched:
    """A process the tool started (``launch:CMD``); the caller stops it."""

    target: Target
    popen: subprocess.Popen[bytes]

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def launch(spec: str, log_path: Path | None = None, cwd: Path | None = None) -> Launched:
    """Start ``launch:CMD`` with its output going to ``log_path`` (or discarded)."""
    argv = parse_launch(spec)
    out = log_path.open("ab") if log_path else subprocess.DEVNULL
    try:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    except OSError as exc:
        raise PrerequisiteError(f"cannot start {argv[0]!r}: {exc.strerror}") from None
    finally:
        if log_path and not isinstance(out, int):
            out.close()
    name = Path(argv[0]).name
    return Launched(Target(popen.pid, name, tuple(argv), spec, role=name), popen)


def alive(pid: int) -> bool:
    """Is the process still there (and not a zombie)?"""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
