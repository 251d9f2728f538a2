"""Target discovery: turn a target SPEC into live processes.

SPECs: ``PID``, ``match:REGEX``, ``port:N``, ``preset:archon``, ``launch:CMD``,
``scalene:CMD``. (The foundation resolves plain PIDs; the profilers issue adds the rest.)
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from probes.errors import PrerequisiteError, UsageError


@dataclass(frozen=True)
class Target:
    pid: int
    name: str
    cmdline: tuple[str, ...]
    spec: str

    @property
    def label(self) -> str:
        return f"{self.name} (pid {self.pid})"


def _target(pid: int, spec: str, name: str | None = None) -> Target:
    try:
        proc = psutil.Process(pid)
        cmdline = tuple(proc.cmdline())
        return Target(pid=pid, name=name or proc.name(), cmdline=cmdline, spec=spec)
    except psutil.NoSuchProcess:
        raise PrerequisiteError(f"no process with PID {pid} (target {spec!r})") from None
    except psutil.AccessDenied:
        raise PrerequisiteError(
            f"no permission to inspect PID {pid}; run as its owner or as root"
        ) from None


def resolve(spec: str) -> list[Target]:
    """The processes a SPEC names (at least one, else an error)."""
    text = spec.strip()
    if text.isdigit():
        return [_target(int(text), spec)]
    raise UsageError(f"unsupported target {spec!r}: use a PID")
