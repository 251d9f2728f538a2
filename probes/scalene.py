"""scalene: launch a program under scalene and read its JSON profile.

scalene cannot attach, so ``scalene:CMD`` starts ``python -m scalene run -o OUT.json
SCRIPT --- ARGS`` (scalene 2.x). ``ScaleneRun.start()`` returns at once; ``stop()``
sends SIGTERM to the whole process group (the ``scalene`` wrapper re-executes itself
in a child, and SIGTERM to that child is what flushes the profile); ``result()`` parses
the JSON into frozen records. Turning them into findings is ``diag.hotspots`` /
``diag.leaks``' job.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from probes.errors import PrerequisiteError, UsageError
from probes.targets import parse_launch


@dataclass(frozen=True)
class ScaleneLine:
    """A line or a function (``function`` set) of scalene's JSON; percentages of run time."""

    file: str
    lineno: int
    text: str
    function: str | None
    cpu_python: float
    cpu_c: float
    cpu_sys: float
    malloc_mb: float
    peak_mb: float
    copy_mb_s: float

    @property
    def cpu_percent(self) -> float:
        return self.cpu_python + self.cpu_c + self.cpu_sys


@dataclass(frozen=True)
class ScaleneLeak:
    file: str
    lineno: int
    likelihood: float
    velocity_mb_s: float
    text: str = ""


@dataclass(frozen=True)
class ScaleneProfile:
    path: str
    elapsed: float
    max_footprint_mb: float
    lines: tuple[ScaleneLine, ...] = field(repr=False)
    functions: tuple[ScaleneLine, ...] = field(repr=False)
    leaks: tuple[ScaleneLeak, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "type": "scalene_profile",
            "path": self.path,
            "elapsed": self.elapsed,
            "max_footprint_mb": self.max_footprint_mb,
            "lines": len(self.lines),
            "functions": len(self.functions),
            "leaks": len(self.leaks),
        }


def _f(d: dict[str, Any], key: str) -> float:
    try:
        return float(d.get(key) or 0.0)
    except (TypeError, ValueError):
        return 0.0


def parse_profile(data: dict[str, Any], path: str = "") -> ScaleneProfile:
    """scalene's JSON (2.x) into records; unknown or missing fields read as 0."""
    if data == {}:
        raise ValueError(
            "scalene collected no samples (the program ran too briefly: profile longer)"
        )
    files = data.get("files")
    if not isinstance(files, dict):
        raise ValueError("not a scalene profile (no 'files')")
    lines: list[ScaleneLine] = []
    funcs: list[ScaleneLine] = []
    leaks: list[ScaleneLeak] = []
    for fname, entry in files.items():
        if not isinstance(entry, dict):
            continue
        texts: dict[int, str] = {}
        for kind, sink in (("lines", lines), ("functions", funcs)):
            for row in entry.get(kind) or []:
                if not isinstance(row, dict):
                    continue
                lineno = int(row.get("lineno") or 0)
                text = str(row.get("line") or "").strip()
                if kind == "lines":
                    texts[lineno] = text
                sink.append(
                    ScaleneLine(
                        fname, lineno, text, text if kind == "functions" else None,
                        _f(row, "n_cpu_percent_python"), _f(row, "n_cpu_percent_c"),
                        _f(row, "n_sys_percent"), _f(row, "n_malloc_mb"), _f(row, "n_peak_mb"),
                        _f(row, "n_copy_mb_s"),
                    )
                )  # fmt: skip
        for lineno_text, leak in (entry.get("leaks") or {}).items():
            if not isinstance(leak, dict):
                continue
            lineno = int(lineno_text)
            leaks.append(
                ScaleneLeak(fname, lineno, _f(leak, "likelihood"), _f(leak, "velocity_mb_s"),
                            texts.get(lineno, ""))
            )  # fmt: skip
    return ScaleneProfile(
        path,
        _f(data, "elapsed_time_sec"),
        _f(data, "max_footprint_mb"),
        tuple(lines),
        tuple(funcs),
        tuple(leaks),
    )


def read_profile(path: Path) -> ScaleneProfile:
    try:
        data = json.loads(path.read_text())
        return parse_profile(data, str(path))
    except (OSError, ValueError) as exc:
        raise PrerequisiteError(f"cannot read scalene profile {path}: {exc}") from None


def scalene_argv(spec: str, out_json: Path) -> list[str]:
    """``scalene:CMD`` → the scalene 2.x command line. CMD is ``[python] script.py ARGS``."""
    argv = parse_launch(spec)
    if "python" in Path(argv[0]).name and len(argv) > 1:
        argv = argv[1:]
    if not argv[0].endswith(".py") or not Path(argv[0]).is_file():
        raise UsageError(
            f"scalene needs a Python script: {spec!r} should be "
            "scalene:'python path/to/app.py ARGS'"
        )
    return [sys.executable, "-m", "scalene", "run", "-o", str(out_json), argv[0], "---", *argv[1:]]


class ScaleneRun:
    """A program running under scalene; the caller stops it (or it ends on its own)."""

    def __init__(self, spec: str, out_dir: Path, *, cpu_only: bool = False) -> None:
        self.spec = spec
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_json = out_dir / f"scalene-{int(time.time() * 1000)}.json"
        self.argv = scalene_argv(spec, self.out_json)
        if cpu_only:
            self.argv.insert(4, "--cpu-only")
        self.log_path = out_dir / (self.out_json.stem + ".log")
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise RuntimeError("not started")
        return self._popen.pid

    def program_pids(self) -> list[int]:
        """The scalene process and its children (the program runs in one of them)."""
        try:
            proc = psutil.Process(self.pid)
            return [proc.pid, *(c.pid for c in proc.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self._popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def poll(self) -> bool:
        return self._popen is not None and self._popen.poll() is not None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process group (scalene flushes the profile), then wait."""
        if self._popen is None:
            return
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._popen.pid, signal.SIGTERM)
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self._popen.pid, signal.SIGKILL)
            self._popen.wait()
        # the wrapper may exit before its child finished writing
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._group_alive():
            time.sleep(0.1)

    def _group_alive(self) -> bool:
        if self._popen is None:
            return False
        try:
            os.killpg(self._popen.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def result(self) -> ScaleneProfile:
        if not self.out_json.exists():
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            last = [ln for ln in log.strip().splitlines() if ln.strip()][-1:] or ["no output"]
            raise PrerequisiteError(f"scalene wrote no profile for {self.spec!r}: {last[0]}")
        return read_profile(self.out_json)


async def run_for(
    run: ScaleneRun, seconds: float, stop: asyncio.Event | None = None
) -> ScaleneProfile:
    """Start, let it run ``seconds`` (or until it exits / ``stop``), stop, parse."""
    run.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not run.poll():
        if stop is not None and stop.is_set():
            break
        await asyncio.sleep(0.1)
    await asyncio.to_thread(run.stop)
    return await asyncio.to_thread(run.result)
