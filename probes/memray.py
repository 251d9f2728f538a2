"""memray attach windows: track a running process's allocations for a bounded time.

``MemrayRecorder(pid, out_dir, duration)``: ``start()`` runs ``memray attach -o FILE
--duration N --trace-python-allocators PID`` (gdb injects memray into the target, which
then writes FILE itself, so FILE lives in a private directory the target's user can
write), ``poll()`` is true once the capture is finalized, ``stop()`` detaches early,
``result()`` reads it back (``read_capture``, in a child process; call it from a thread) and moves
the capture into ``out_dir``. ``record_window`` is the asyncio form.

memray injects itself with gdb. On CPUs with AMX, gdb 13 cannot restore the registers of
a process it called into (the kernel wants the whole XSAVE area; gdb writes a smaller
one), and the call it interrupted then fails in the target (``OSError: [Errno 514]`` from
``time.sleep``): it would kill the process we diagnose. So ``attach_debugger()`` first
tries gdb on a throwaway ``sleep``; where it fails, gdb runs with a small preload that
completes the write (``native/gdb_xstate_shim.c``), if that passes the same test.
(lldb 14 was tried instead: it segfaulted a threaded stand-in service.)

``read_capture`` turns memray's temporal records into per-location live-byte series
across the capture's memory snapshots; ranking them (leak vs filling cache) is
``diag.leaks``' job. If the target's interpreter cannot import memray,
``memray_unavailable`` says so with the fix, and the caller goes on without it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from probes.errors import PrerequisiteError

Frame = tuple[str, str, int]


@dataclass(frozen=True)
class LocationSeries:
    """Live bytes allocated at one stack, sampled at the capture's snapshots."""

    stack: tuple[Frame, ...]  # leaf first (memray's order)
    live_bytes: tuple[int, ...]  # one value per snapshot
    allocations: int  # allocations made during the window

    @property
    def final_bytes(self) -> int:
        return self.live_bytes[-1] if self.live_bytes else 0


@dataclass(frozen=True)
class MemrayCapture:
    """What a memray window saw: snapshot clock, RSS/heap, and per-stack live bytes."""

    pid: int
    path: str
    times: tuple[float, ...]  # seconds since the first snapshot
    rss: tuple[int, ...]
    heap: tuple[int, ...]
    locations: tuple[LocationSeries, ...] = field(repr=False)
    total_allocations: int = 0
    peak_memory: int = 0
    duration: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "type": "memray_capture",
            "pid": self.pid,
            "path": self.path,
            "snapshots": len(self.times),
            "duration": round(self.duration, 3),
            "total_allocations": self.total_allocations,
            "peak_memory": self.peak_memory,
            "rss_first_last": [self.rss[0], self.rss[-1]] if self.rss else [],
            "heap_first_last": [self.heap[0], self.heap[-1]] if self.heap else [],
            "locations": len(self.locations),
        }


@dataclass(frozen=True)
class MemrayWindow:
    """The record of one window (a Session writes ``to_json()``)."""

    pid: int
    label: str
    started: float
    duration: float
    path: str | None
    error: str | None = None
    capture: MemrayCapture | None = field(default=None, compare=False, repr=False)

    kind = "memray_window"

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "type": self.kind,
            "pid": self.pid,
            "label": self.label,
            "started": self.started,
            "duration": self.duration,
            "path": self.path,
            "error": self.error,
        }
        if self.capture is not None:
            out["capture"] = self.capture.to_json()
        return out


def memray_path() -> str:
    beside = Path(sys.executable).parent / "memray"
    found = str(beside) if beside.is_file() else shutil.which("memray")
    if not found:
        raise PrerequisiteError("memray not found: pip install memray")
    return found


def target_interpreter(pid: int) -> str | None:
    """The interpreter *as the target started it*: a venv's ``bin/python`` symlink picks
    that venv's site-packages, while ``/proc/PID/exe`` resolves to the base interpreter."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv0 = fh.read().split(b"\0", 1)[0].decode(errors="replace")
        if "python" in Path(argv0).name:
            path = Path(argv0)
            if not path.is_absolute():
                path = Path(os.readlink(f"/proc/{pid}/cwd")) / path
            if path.is_file():
                return str(path)
        return str(Path(f"/proc/{pid}/exe").resolve(strict=True))
    except OSError:
        return None


def _target_env(pid: int) -> dict[str, str]:
    """The target's PYTHONPATH/PYTHONHOME/VIRTUAL_ENV, so the import check sees its path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            for item in fh.read().split(b"\0"):
                key, _, value = item.decode(errors="replace").partition("=")
                if key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONUSERBASE"):
                    env[key] = value
    except OSError:
        pass
    return env


@dataclass(frozen=True)
class Debugger:
    """How ``memray attach`` injects itself here: gdb, maybe with our preload (below)."""

    ok: bool
    why: str  # what was found, or what is missing and the fix
    preload: str | None = None  # LD_PRELOAD for gdb: the XSAVE fix

    def env(self) -> dict[str, str]:
        """The environment for ``memray attach`` / ``detach`` (and the gdb they run)."""
        env = dict(os.environ)
        if self.preload:
            env["LD_PRELOAD"] = " ".join(p for p in (self.preload, env.get("LD_PRELOAD")) if p)
        return env


_SHIM_SOURCE = Path(__file__).parent / "native" / "gdb_xstate_shim.c"


@functools.cache
def attach_debugger() -> Debugger:
    """gdb if it can call into a throwaway process and leave it unharmed; else gdb with
    ``native/gdb_xstate_shim.c`` preloaded (built with the system's C compiler), if that
    passes the same test; else nothing (memray windows are skipped with the reason)."""
    if shutil.which("gdb") is None:
        return Debugger(False, "memray attach needs gdb: apt-get install gdb")
    problem = _gdb_call_problem()
    if not problem:
        return Debugger(True, "gdb can call into a process")
    try:
        shim = _build_shim()
    except OSError as exc:
        return Debugger(False, f"{problem}; cannot build the fix: {exc}")
    fixed = _gdb_call_problem({**os.environ, "LD_PRELOAD": shim})
    if fixed:
        return Debugger(False, f"{problem}, and with the XSAVE fix: {fixed}")
    return Debugger(True, f"gdb with the XSAVE fix ({problem} without it)", shim)


def _build_shim() -> str:
    """The preload, compiled once per source version into a private directory."""
    source = _SHIM_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:12]
    out = Path(tempfile.gettempdir()) / f"archon-diag-{os.geteuid()}" / f"xstate-{digest}.so"
    out.parent.mkdir(mode=0o700, exist_ok=True)
    # gdb runs as root with this preloaded: never load or build it in a directory of /tmp
    # that someone else made (or can write to)
    st = out.parent.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise OSError(f"{out.parent} is not a private directory of ours: remove it")
    if out.is_file():
        return str(out)
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise OSError("no C compiler: apt-get install gcc")
    partial = out.with_suffix(f".{os.getpid()}.tmp")
    proc = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(partial), str(_SHIM_SOURCE), "-ldl"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise OSError(f"{compiler} failed: {lines[-1] if lines else proc.returncode}")
    partial.replace(out)
    return str(out)


def _gdb_call_problem(env: dict[str, str] | None = None) -> str:
    """Empty when gdb can call a function in a process sleeping in a system call and let
    it go on; else what went wrong (tried on a ``sleep`` of our own, never a target)."""
    try:
        child = subprocess.Popen(
            ["sleep", "30"], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    except OSError as exc:
        return f"cannot start a test process: {exc}"
    try:
        time.sleep(0.1)  # into its nanosleep, where the targets usually are
        proc = subprocess.run(
            ["gdb", "-batch", "-nx", "-p", str(child.pid),
             "-iex", "set auto-solib-add off", "-ex", "call (int)getpid()"],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        time.sleep(0.1)
        if child.poll() is not None:  # the interrupted sleep failed: gdb would harm targets
            said = (proc.stdout + proc.stderr).splitlines()
            lines = [ln for ln in said if "couldn't" in ln.lower()]
            why = lines[0].strip().rstrip(".") if lines else f"exit code {child.returncode}"
            return f"gdb breaks the process it calls into ({why})"
        if f"= {child.pid}" not in proc.stdout:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            return f"gdb cannot call into a process: {lines[-1] if lines else 'no output'}"
        return ""
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"gdb test failed: {exc}"
    finally:
        child.kill()
        child.wait()


def memray_unavailable(pid: int) -> str | None:
    """None when memray can attach to ``pid``; else one line saying why and the fix."""
    debugger = attach_debugger()
    if not debugger.ok:
        return f"{debugger.why} (memray windows skipped)"
    interpreter = target_interpreter(pid)
    if interpreter is None:
        return f"cannot read PID {pid}'s interpreter (gone, or no permission: run as root)"
    try:
        proc = subprocess.run(
            [interpreter, "-c", "import memray"],
            capture_output=True,
            timeout=30,
            env=_target_env(pid),
            cwd=f"/proc/{pid}/cwd",
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {interpreter}: {exc}"
    if proc.returncode != 0:
        return (
            f"memray is not importable by PID {pid}'s interpreter {interpreter}: "
            f"run `{interpreter} -m pip install memray` in the target's environment "
            "(memray windows skipped; other probes go on)"
        )
    return None


def _private_dir(pid: int) -> Path:
    """A fresh directory the target's user can write into (and nobody else can)."""
    path = Path(tempfile.mkdtemp(prefix=f"archon-diag-memray-{pid}-", dir="/tmp"))
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
        if os.geteuid() == 0 and uid != 0:
            os.chown(path, uid, -1)
    except OSError:
        path.chmod(0o1777)
    return path


class MemrayRecorder:
    """One bounded ``memray attach`` window on one PID."""

    def __init__(
        self,
        pid: int,
        out_dir: Path,
        *,
        label: str = "",
        duration: float = 10.0,
        trace_python_allocators: bool = True,
        native: bool = False,
    ) -> None:
        self.pid = pid
        self.label = label or f"pid {pid}"
        self.out_dir = out_dir
        self.duration = duration
        self.trace_python_allocators = trace_python_allocators
        self.native = native
        self._tmp = _private_dir(pid)
        self.capture_path = self._tmp / f"memray-{pid}.bin"
        self._attach: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._attached_at: float | None = None
        self._error: str | None = None
        self._log = self._tmp / "attach.log"
        self._detaching = False
        self._last_size = -1
        self._checked_at = -1.0

    def argv(self) -> list[str]:
        args = [
            memray_path(), "attach", "--method", "gdb", "-o", str(self.capture_path),
            "--duration", str(max(1, round(self.duration))), "--force", "--no-compress",
        ]  # fmt: skip
        if self.trace_python_allocators:
            args.append("--trace-python-allocators")
        if self.native:
            args.append("--native")
        return [*args, str(self.pid)]

    def start(self) -> None:
        self._started = time.time()
        with self._log.open("wb") as log:
            self._attach = subprocess.Popen(
                self.argv(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=attach_debugger().env(),
            )

    def attach_finished(self) -> bool:
        """True once ``memray attach`` (gdb) returned: the target is no longer ptraced."""
        return self._attach is not None and self._attach.poll() is not None

    def _finalized(self, throttle: bool = False) -> bool:
        if not self.capture_path.exists():
            return False
        now = time.monotonic()
        if throttle and now - self._checked_at < 1.0:  # a check is a child process
            return False
        self._checked_at = now
        return capture_finalized(self.capture_path)

    def poll(self) -> bool:
        """True when the window is over (capture finalized, or attach failed)."""
        if self._attach is None:
            return False
        if self._attach.poll() is None:
            return False
        if self._attach.returncode != 0:
            if self._error is None:
                text = self._log.read_text(errors="replace") if self._log.exists() else ""
                self._error = explain_attach_failure(text, self.pid)
            return True
        if self._attached_at is None:
            self._attached_at = time.monotonic()
        if not _pid_alive(self.pid):
            if self._error is None and not self._finalized():
                self._error = f"PID {self.pid} exited during the memray window"
            return True
        if not self._detaching and time.monotonic() - self._attached_at < self.duration - 0.5:
            return False  # opening the capture is not free: only look once it may be done
        # ...and only once the file has stopped growing (opening a capture that is still
        # being written costs seconds of CPU on a busy target)
        try:
            size = self.capture_path.stat().st_size
        except OSError:
            return False
        if size != self._last_size:
            self._last_size = size
            return False
        return self._finalized(throttle=True)

    def stop(self) -> None:
        """Stop tracking now (``memray detach``); the target finalizes the capture."""
        self._detaching = True
        if self._attach is not None and self._attach.poll() is None:
            self._attach.wait(30)
        if self._attach is not None and self._attach.returncode == 0 and not self._finalized():
            subprocess.run(
                [memray_path(), "detach", "--method", "gdb", str(self.pid)],
                capture_output=True,
                timeout=60,
                check=False,
                env=attach_debugger().env(),
            )

    def result(self, read: bool = True) -> MemrayWindow:
        """Move the capture into ``out_dir`` and read it (seconds of CPU on big captures:
        call from a thread). ``read=False``: only move it, for a caller that analyses the
        file later (a Session's report reads it once, itself)."""
        elapsed = time.time() - self._started
        if self._error is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return MemrayWindow(self.pid, self.label, self._started, elapsed, None, self._error)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        final = self.out_dir / f"memray-{self.pid}-{int(self._started)}.bin"
        try:
            shutil.move(str(self.capture_path), final)
        except OSError as exc:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return MemrayWindow(
                self.pid, self.label, self._started, elapsed, None, f"no capture: {exc}"
            )
        shutil.rmtree(self._tmp, ignore_errors=True)
        if not read:
            return MemrayWindow(self.pid, self.label, self._started, elapsed, str(final), None)
        try:
            capture = read_capture(final, self.pid)
        except CaptureError as exc:
            return MemrayWindow(self.pid, self.label, self._started, elapsed, str(final), str(exc))
        return MemrayWindow(
            self.pid, self.label, self._started, capture.duration, str(final), None, capture
        )


def explain_attach_failure(text: str, pid: int) -> str:
    low = text.lower()
    if "no module named" in low or ("memray" in low and "import" in low):
        return f"memray is not importable in PID {pid}'s environment: pip install memray there"
    if "ptrace" in low or "operation not permitted" in low or "permission" in low:
        return (
            f"no ptrace permission for PID {pid}: run as root, or "
            "`sysctl kernel.yama.ptrace_scope=0`, or add --cap-add SYS_PTRACE"
        )
    if "no such process" in low or "does not exist" in low:
        return f"PID {pid} is gone"
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return f"memray attach failed on PID {pid}: {lines[-1] if lines else 'no output'}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[-1][:1] != "Z"
    except OSError:
        return False


class CaptureError(Exception):
    """A capture file is missing, truncated or not a memray capture."""


def _reader(*args: str) -> subprocess.CompletedProcess[bytes]:
    """``python -m probes.memray_reader ARGS``: memray's reader never runs in the caller.
    (Importing memray costs a process 4 MiB, opening a capture's metadata 8 MiB more;
    in the live diag process that stayed after every memray window.)"""
    import probes

    root = str(Path(probes.__file__).resolve().parents[1])
    paths = [root, *filter(None, [os.environ.get("PYTHONPATH")])]  # no empty entry (= cwd)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.run(
        [sys.executable, "-m", "probes.memray_reader", *args],
        capture_output=True, env=env, check=False,
    )  # fmt: skip


def capture_finalized(path: Path) -> bool:
    """True once the target has finished writing the capture (its end time is set)."""
    try:
        return _reader("--finalized", str(path)).returncode == 0
    except OSError:
        return False


def capture_finalized_here(path: Path) -> bool:
    """``capture_finalized`` in this process (the child's side)."""
    try:
        import memray

        meta = memray.FileReader(str(path)).metadata
    except Exception:  # still being written / unreadable yet
        return False
    return bool(meta.end_time > meta.start_time)


def read_capture(path: Path, pid: int = 0, min_peak_bytes: int = 0) -> MemrayCapture:
    """Per-stack live bytes at each memory snapshot of a (non-aggregated) capture.

    ``min_peak_bytes``: keep only the locations that ever held that much (a busy window
    has thousands of tiny ones). The capture is read in a child process
    (``probes.memray_reader``), which hands back only the compact series: memray's reader
    holds every record while it runs (~15 s of CPU for the stand-in's busy 6 s window),
    which in the live diag process held the GIL away from the TUI and left its peak
    behind; a read now leaves the caller about 1 MiB larger."""
    import pickle

    try:
        done = _reader(str(path), str(pid), str(min_peak_bytes))
    except OSError as exc:
        raise CaptureError(f"cannot read memray capture {path}: {exc}") from None
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        why = lines[-1] if lines else f"reader exited with {done.returncode}"
        raise CaptureError(why.removeprefix("CaptureError: "))
    capture: MemrayCapture = pickle.loads(done.stdout)
    return capture


def read_capture_here(path: Path, pid: int = 0, min_peak_bytes: int = 0) -> MemrayCapture:
    """``read_capture`` in this process (the child's side)."""
    import memray

    try:
        reader = memray.FileReader(str(path))
        snaps = list(reader.get_memory_snapshots())
        meta = reader.metadata
    except Exception as exc:  # memray raises OSError / ValueError on bad files
        raise CaptureError(f"cannot read memray capture {path}: {exc}") from None
    if not snaps:
        raise CaptureError(f"memray capture {path} holds no snapshots (window too short?)")
    t0 = snaps[0].time
    times = tuple((s.time - t0) / 1000.0 for s in snaps)
    n = len(snaps)
    locations = []
    try:
        records = reader.get_temporal_allocation_records(merge_threads=True)
    except Exception as exc:
        raise CaptureError(f"cannot read memray capture {path}: {exc}") from None
    for rec in records:
        delta = [0] * (n + 1)
        allocations = 0
        for iv in rec.intervals:
            start = min(iv.allocated_before_snapshot, n)
            end = n if iv.deallocated_before_snapshot is None else iv.deallocated_before_snapshot
            end = min(end, n)
            allocations += iv.n_allocations
            if end > start:
                delta[start] += iv.n_bytes
                delta[end] -= iv.n_bytes
        live = []
        acc = 0
        for k in range(n):
            acc += delta[k]
            live.append(acc)
        if not any(live) or max(live) < min_peak_bytes:
            continue
        stack = tuple((str(f), str(p), int(ln)) for f, p, ln in rec.stack_trace())
        locations.append(LocationSeries(stack, tuple(live), allocations))
    del records, reader
    duration = (meta.end_time - meta.start_time).total_seconds()
    return MemrayCapture(
        pid=pid or int(meta.pid or 0),
        path=str(path),
        times=times,
        rss=tuple(int(s.rss) for s in snaps),
        heap=tuple(int(s.heap) for s in snaps),
        locations=tuple(locations),
        total_allocations=int(meta.total_allocations),
        peak_memory=int(meta.peak_memory),
        duration=max(duration, times[-1]),
    )


async def record_window(
    recorder: MemrayRecorder, stop: asyncio.Event | None = None
) -> MemrayWindow:
    """Run one window without blocking the loop; ``stop`` detaches early."""
    recorder.start()
    deadline = time.monotonic() + recorder.duration + 60.0
    while not recorder.poll():
        if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
            await asyncio.to_thread(recorder.stop)
            for _ in range(100):
                if recorder.poll():
                    break
                await asyncio.sleep(0.1)
            break
        await asyncio.sleep(0.1)
    return await asyncio.to_thread(recorder.result)
