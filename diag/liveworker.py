"""The live view's analysis passes, in a child process of their own.

A live session re-analyses its bundle every few seconds (``diag.analysis.report_view``).
Run on a thread of the diag process, those passes cost it twice:

- **memory**: each pass builds and drops megabytes of short-lived records, and objects
  that other threads keep (the TUI's, the probes') pin the arenas those records filled.
  The process's RSS followed the passes' peaks and rose all run, about 0.8 MiB a minute,
  although its live objects did not;
- **the screen**: for the hundreds of milliseconds a pass takes, the UI thread shares the
  GIL with it.

So the passes run in ``python -m diag.liveworker``, a child that reads the bundle (files
only: no database, no probes), analyses it and sends back the ``LiveSnapshot`` with
pickle over its stdin/stdout. The diag process only maps the result and draws it.

The child is replaced once its RSS has grown ``grow_limit`` past what it held after its
first pass: whatever a long soak would pile up is handed back to the system whole. The
successor starts with the memray captures its predecessor had parsed (a capture takes
seconds of CPU to read), so a replacement costs about a second of CPU: the start and
one pass over the py-spy windows.

Requests and replies are pickled tuples: ``("pass", bundle, final)``, ``("handover",)``
(the parsed captures, pickled) and ``("adopt", blob)``; every reply is ``(status, value,
cpu seconds, rss bytes)``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from diag.live import LiveSnapshot

GROW_LIMIT = 4 << 20  # bytes of RSS over the worker's first pass before it is replaced


class WorkerError(Exception):
    """The worker could not run a pass (it failed to start, died, or the pass raised)."""


@dataclass(frozen=True)
class Reply:
    snapshot: LiveSnapshot
    cpu_s: float  # the worker's CPU for this pass
    rss_bytes: int  # the worker's RSS after it


class AnalysisWorker:
    """The parent's end: one pass at a time (the live session's analysis thread), closed
    from any thread. Started on the first pass, restarted after it is retired or lost."""

    def __init__(self, grow_limit: int = GROW_LIMIT) -> None:
        self.grow_limit = grow_limit
        self.started = 0  # workers started so far
        self._proc: subprocess.Popen[bytes] | None = None
        self._baseline = 0  # the current worker's RSS after its first pass
        self._seed: bytes | None = None  # a retired worker's parsed captures
        self._lock = threading.Lock()
        self._closed = False

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def run(self, bundle: Path, *, final: bool = False) -> Reply:
        """One analysis pass of ``bundle``; raises ``WorkerError``."""
        proc = self._ensure()
        value, cpu_s, rss = self._ask(proc, ("pass", str(bundle), final))
        if not self._baseline:
            self._baseline = rss
        elif rss > self._baseline + self.grow_limit:
            with contextlib.suppress(WorkerError):
                (self._seed, _, _) = self._ask(proc, ("handover",))
            self._retire(proc)
        return Reply(value, cpu_s, rss)

    def _ask(self, proc: subprocess.Popen[bytes], request: tuple[Any, ...]) -> Any:
        try:
            assert proc.stdin is not None and proc.stdout is not None
            pickle.dump(request, proc.stdin)
            proc.stdin.flush()
            status, value, cpu_s, rss = pickle.load(proc.stdout)
        except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
            self._retire(proc)
            if self._closed:
                raise WorkerError("closed") from None
            code = proc.poll()
            raise WorkerError(
                f"the analysis worker exited (code {code})" if code is not None
                else f"lost the analysis worker: {exc}"
            ) from None  # fmt: skip
        if status != "ok":
            raise WorkerError(str(value))
        return value, cpu_s, rss

    def close(self) -> None:
        with self._lock:
            self._closed = True
            proc = self._proc
        if proc is not None:
            self._retire(proc)

    def _ensure(self) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._closed:
                raise WorkerError("closed")
            if self._proc is None:
                # stderr is the diag process's (the bundle's stderr.log under the TUI)
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "diag.liveworker"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    close_fds=True,
                )
                self._baseline = 0
                self.started += 1
            proc, seed, self._seed = self._proc, self._seed, None
        if seed is not None:
            self._ask(proc, ("adopt", seed))
        return proc

    def _retire(self, proc: subprocess.Popen[bytes]) -> None:
        """End ``proc``: end of input asks it to exit; a pass still running is killed."""
        with self._lock:
            if self._proc is proc:
                self._proc = None
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # only now: a thread still reading the reply holds the stream until end of file
        with contextlib.suppress(OSError):
            if proc.stdout is not None:
                proc.stdout.close()


# ---- the child ----------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _give_back_freed_memory() -> None:
    """Return what a pass freed to the system: glibc keeps freed memory for reuse, so every
    burst (the pass over a memray window, say) would stay in the worker's RSS and bring its
    replacement sooner."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
        return trim
    return None


def serve(requests: IO[bytes], replies: IO[bytes]) -> int:
    """Answer requests until end of input."""
    from diag.analysis import adopt_captures, parsed_captures, report_view
    from diag.bundle import Bundle

    while True:
        try:
            request = pickle.load(requests)
        except EOFError:
            return 0
        started = time.process_time()
        reply: tuple[str, Any]
        try:
            match request:
                case ("pass", path, final):
                    reply = ("ok", report_view(Bundle(Path(path)), final=final))
                case ("handover",):
                    reply = ("ok", pickle.dumps(parsed_captures()))
                case ("adopt", blob):
                    adopt_captures(pickle.loads(blob))
                    reply = ("ok", None)
                case _:
                    reply = ("error", f"unknown request {request!r:.60}")
        except Exception as exc:  # the parent shows it as a notice and carries on
            text = str(exc).strip().splitlines()
            reply = ("error", text[0] if text else type(exc).__name__)
        _give_back_freed_memory()
        try:
            pickle.dump((*reply, time.process_time() - started, _rss()), replies)
            replies.flush()
        except BrokenPipeError:  # the parent is gone
            return 0


def main() -> int:
    # Ctrl-C or a hang-up on the terminal reaches the whole process group: the parent
    # decides, and its end of the pipe closing ends this process
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything that prints goes to stderr, not into the replies
    return serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    sys.exit(main())
