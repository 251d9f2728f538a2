"""py-spy as a subprocess, in bounded windows, and the parser of its raw collapsed stacks.

``PySpyRecorder`` runs one ``py-spy record --format raw`` window for one PID: ``start()``
returns at once, ``poll()`` says whether it finished, ``stop()`` ends it early with SIGINT
(py-spy loses its output on SIGTERM), ``result()`` reads the file into a ``PySpyWindow``.
``record_window`` is the asyncio form a Session awaits. Two modes: ``cpu`` (active threads
only: hotspots) and ``wall`` (``--idle``: every thread, for the wall-time breakdown).
Frames are recorded with ``--full-filenames`` so the analysis can tell application code
from the standard library and installed packages.

Parsing (``parse_collapsed``) is pure and fast; it counts garbage lines instead of failing
and says so in ``CollapsedStacks.bad_lines``. Folding and statistics live in
``diag.hotspots``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probes.errors import PrerequisiteError

Frame = tuple[str, str, int]  # (function, file, line); line 0 when unknown
Stack = tuple[Frame, ...]  # root first


@dataclass(frozen=True)
class CollapsedStacks:
    """Distinct stacks (root first) with their sample counts."""

    stacks: dict[Stack, int]
    bad_lines: int = 0

    @property
    def total(self) -> int:
        return sum(self.stacks.values())

    def to_json(self) -> dict[str, object]:
        return {"total": self.total, "distinct": len(self.stacks), "bad_lines": self.bad_lines}


class _Shared:
    """Frames and stacks shared by the windows this process parses. A live view holds
    dozens of windows of the same processes; parsed apart, each kept its own copy of the
    same frames (20,000 frame tuples and their names for 1,100 distinct frames in a live
    view of 96 windows).

    Bounded by recent use, not by the run's length: the tables start a new generation
    every ``every`` parses, and what two generations did not use is dropped (windows
    parsed before keep what they hold). A table of everything ever seen grew all run.
    64 parses is about 40 s of the demo's windows (each is parsed twice: when recorded,
    and by the live view): two generations cover the live view's minute."""

    def __init__(self, every: int = 64) -> None:
        self.every = every
        self.parses = 0
        self.frames: dict[str, Frame] = {}
        self.stacks: dict[Stack, Stack] = {}
        self._old_frames: dict[str, Frame] = {}
        self._old_stacks: dict[Stack, Stack] = {}

    def next_parse(self) -> None:
        self.parses += 1
        if self.parses % self.every == 0:
            self._old_frames, self.frames = self.frames, {}
            self._old_stacks, self.stacks = self.stacks, {}

    def frame(self, text: str) -> Frame | None:
        """The frame of ``text`` when this generation has not seen it yet."""
        frame = self._old_frames.get(text) or _parse_frame(text)
        if frame is not None:
            self.frames[text] = frame
        return frame

    def stack(self, stack: Stack) -> Stack:
        """The shared copy of ``stack`` when this generation has not seen it yet."""
        shared = self._old_stacks.get(stack, stack)
        self.stacks[shared] = shared
        return shared


_SHARED = _Shared()


def _parse_frame(text: str) -> Frame | None:
    idx = text.rfind(" (") if text.endswith(")") else -1
    if idx > 0 or (idx == 0 and text):
        inner = text[idx + 2 : -1]
        path, sep, line = inner.rpartition(":")
        has_line = sep and line.isdigit()
        return (text[:idx], path, int(line)) if has_line else (text[:idx], inner, 0)
    if text and "(" not in text:  # e.g. a thread or process label frame
        return (text, "", 0)
    return None


def parse_collapsed(lines: Iterable[str]) -> CollapsedStacks:
    """Parse ``frame;frame;... count`` lines (root first). Bad lines are counted, skipped."""
    stacks: dict[Stack, int] = {}
    shared = _SHARED
    shared.next_parse()
    known_frames, known_stacks = shared.frames, shared.stacks
    bad = 0
    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        body, _, count_text = line.rpartition(" ")
        if not body or not count_text.isdigit():
            bad += 1
            continue
        frames = []
        for part in body.split(";"):
            frame = known_frames.get(part) or shared.frame(part)
            if frame is None:
                break
            frames.append(frame)
        else:
            stack = tuple(frames)
            stack = known_stacks.get(stack) or shared.stack(stack)
            stacks[stack] = stacks.get(stack, 0) + int(count_text)
            continue
        bad += 1
    return CollapsedStacks(stacks, bad)


def read_collapsed(path: Path) -> CollapsedStacks:
    with path.open(encoding="utf-8", errors="replace") as fh:
        return parse_collapsed(fh)


@dataclass(frozen=True)
class PySpyWindow:
    """One finished recording window (the record a Session writes to JSONL)."""

    pid: int
    label: str
    mode: str  # "cpu" | "wall"
    started: float  # time.time()
    duration: float  # seconds actually sampled
    rate: int
    path: str  # the raw collapsed file
    samples: int
    distinct_stacks: int
    bad_lines: int
    warnings: tuple[str, ...] = ()
    error: str | None = None  # set when the window produced nothing usable
    stacks: CollapsedStacks | None = field(default=None, compare=False, repr=False)

    kind = "pyspy_window"

    def to_json(self) -> dict[str, object]:
        return {
            "type": self.kind,
            "pid": self.pid,
            "label": self.label,
            "mode": self.mode,
            "started": self.started,
            "duration": self.duration,
            "rate": self.rate,
            "path": self.path,
            "samples": self.samples,
            "distinct_stacks": self.distinct_stacks,
            "bad_lines": self.bad_lines,
            "warnings": list(self.warnings),
            "error": self.error,
        }


def pyspy_path() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.is_file() else shutil.which("py-spy")
    if not found:
        raise PrerequisiteError("py-spy not found: pip install py-spy")
    return found


def explain_failure(stderr: str, pid: int) -> str:
    """One line saying what went wrong with a py-spy run, and what to do."""
    text = stderr.lower()
    if "permission denied" in text or "operation not permitted" in text:
        return (
            f"no ptrace permission for PID {pid}: run as root, or "
            "`sysctl kernel.yama.ptrace_scope=0`, or add --cap-add SYS_PTRACE"
        )
    if "no such process" in text or "failed to open process" in text:
        return f"PID {pid} is gone"
    if "python version" in text or "failed to find python" in text or "interpreter" in text:
        return f"PID {pid} does not look like a Python process (py-spy found no interpreter)"
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    return f"py-spy failed on PID {pid}: {lines[-1] if lines else 'no output'}"


def dump_threads(
    pid: int, *, with_locals: bool = False, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """One non-blocking ``py-spy dump --json`` of a process: its threads, frames
    innermost first (with each frame's locals as py-spy shows them when
    ``with_locals``). An empty list when the dump fails: callers sample, they do not
    depend on one dump."""
    import json

    cmd = [pyspy_path(), "dump", "--pid", str(pid), "--json", "--nonblocking"]
    if with_locals:
        cmd.append("--locals")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        threads = json.loads(proc.stdout or "[]")
    except (subprocess.SubprocessError, ValueError, OSError):
        return []
    return [t for t in threads if isinstance(t, dict)] if isinstance(threads, list) else []


def wall_rate(rate: int) -> int:
    """The rate of the ``--idle`` wall recording beside a CPU recording at ``rate``.

    The wall recording only estimates shares (of each thread's wall time per category,
    of the event loop's time spent blocked), for which a fifth of the CPU rate still gives
    hundreds of samples per thread per minute; py-spy's own CPU scales with its rate
    (measured on the stand-in: ~9 % of a core at 100 Hz, ~2 % at 20 Hz), and on a busy
    host that CPU comes out of the target's."""
    return max(10, rate // 5)


class PySpyRecorder:
    """One ``py-spy record`` window on one PID.

    ``nonblocking`` (the default) reads the target's stacks while it runs; blocking mode
    stops every thread for each sample. Measured on the stand-in (faults none, CPU-bound
    at ~130 req/s, 100 Hz): blocking cost 14-27 % of its throughput, non-blocking none
    that could be told from noise. The price of not pausing is torn stacks: against a
    blocking recording of the same seconds, the top functions' self shares agreed within
    about 2 points, but about 12 % of the stacks had lost their outermost frames, so total
    shares read low."""

    def __init__(
        self,
        pid: int,
        out_path: Path,
        *,
        label: str = "",
        duration: float = 5.0,
        rate: int = 100,
        mode: str = "cpu",
        nonblocking: bool = True,
    ) -> None:
        if mode not in ("cpu", "wall"):
            raise ValueError(f"mode must be cpu or wall, not {mode!r}")
        self.pid = pid
        self.label = label or f"pid {pid}"
        self.out_path = out_path
        self.duration = duration
        self.rate = rate
        self.mode = mode
        self.nonblocking = nonblocking
        self._popen: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._mono = 0.0
        self._stopped_at: float | None = None
        self._err_path = out_path.with_suffix(out_path.suffix + ".log")

    def argv(self) -> list[str]:
        args = [
            pyspy_path(),
            "record",
            "--pid", str(self.pid),
            "--format", "raw",
            "--output", str(self.out_path),
            "--rate", str(self.rate),
            "--duration", str(max(1, round(self.duration))),
            "--full-filenames",
        ]  # fmt: skip
        if self.mode == "wall":
            args.append("--idle")
        if self.nonblocking:
            args.append("--nonblocking")
        return args

    def start(self) -> None:
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self._started = time.time()
        self._mono = time.monotonic()
        with self._err_path.open("wb") as err:
            self._popen = subprocess.Popen(
                self.argv(), stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL
            )

    def poll(self) -> bool:
        """True once py-spy has exited."""
        return self._popen is not None and self._popen.poll() is not None

    def stop(self) -> None:
        """End the window early; py-spy writes what it has (SIGINT, not SIGTERM)."""
        if self._popen is not None and self._popen.poll() is None:
            self._stopped_at = time.monotonic()
            self._popen.send_signal(signal.SIGINT)

    def wait(self, timeout: float | None = None) -> None:
        if self._popen is None:
            return
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()

    def result(self) -> PySpyWindow:
        """Read the finished window (parsing is CPU work: call it from a thread in a loop)."""
        if self._popen is None or self._popen.returncode is None:
            raise RuntimeError("result() before the recorder finished")
        elapsed = (self._stopped_at or time.monotonic()) - self._mono
        stderr = self._err_path.read_text(errors="replace") if self._err_path.exists() else ""
        warnings = tuple(
            ln.strip().removeprefix("py-spy> ").strip()
            for ln in stderr.splitlines()
            if "behind in sampling" in ln
        )
        if warnings:
            warnings = (warnings[-1] + " (lower --rate)",)
        stacks: CollapsedStacks | None = None
        error: str | None = None
        if self.out_path.exists() and self.out_path.stat().st_size > 0:
            stacks = read_collapsed(self.out_path)
            if not stacks.stacks and stacks.bad_lines:
                error = (
                    f"py-spy output for PID {self.pid} is unreadable ({stacks.bad_lines} bad lines)"
                )
        elif self._popen.returncode != 0:
            error = explain_failure(stderr, self.pid)
        else:
            stacks = CollapsedStacks({})  # ran, but nothing was active
        return PySpyWindow(
            pid=self.pid,
            label=self.label,
            mode=self.mode,
            started=self._started,
            duration=min(elapsed, self.duration),
            rate=self.rate,
            path=str(self.out_path),
            samples=stacks.total if stacks else 0,
            distinct_stacks=len(stacks.stacks) if stacks else 0,
            bad_lines=stacks.bad_lines if stacks else 0,
            warnings=warnings,
            error=error,
            stacks=stacks,
        )


async def record_window(recorder: PySpyRecorder, stop: asyncio.Event | None = None) -> PySpyWindow:
    """Run one window without blocking the loop; ``stop`` ends it early."""
    recorder.start()
    deadline = time.monotonic() + recorder.duration + 15.0
    while not recorder.poll():
        if stop is not None and stop.is_set():
            recorder.stop()
            stop = None
        if time.monotonic() > deadline:
            recorder.stop()
            await asyncio.to_thread(recorder.wait, 5.0)
            break
        await asyncio.sleep(0.25)  # 4 recorders x 20 polls/s showed up in our own CPU
    return await asyncio.to_thread(recorder.result)


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
