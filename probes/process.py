"""Process series: per-target resource samples (psutil) plus host totals, at ~1 Hz.

``ProcessSampler.sample()`` is one cheap, synchronous round (a few ms per target) that
returns records; ``ProcessSampler.run(emit, stop)`` is the asyncio loop a Session runs.
A target that exits yields one ``TargetGone`` record and is dropped; the rest go on.
Analysis (leak verdicts) lives in ``diag.leaks``; this module only measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import psutil

from probes.targets import Target


@dataclass(frozen=True)
class ProcessSample:
    t: float  # time.time()
    pid: int
    label: str
    cpu_percent: float  # of one core, since the previous sample
    rss: int
    uss: int | None  # None when smaps is not readable
    pss: int | None
    threads: int
    fds: int | None
    connections: int | None
    read_bytes: int | None
    write_bytes: int | None

    kind = "process"

    def to_json(self) -> dict[str, object]:
        return {"type": self.kind, **asdict(self)}


@dataclass(frozen=True)
class HostSample:
    t: float
    cpu_percent: float  # all cores, 0-100
    mem_total: int
    mem_available: int
    net_sent: int
    net_recv: int

    kind = "host"

    def to_json(self) -> dict[str, object]:
        return {"type": self.kind, **asdict(self)}


@dataclass(frozen=True)
class TargetGone:
    t: float
    pid: int
    label: str

    kind = "gone"

    def to_json(self) -> dict[str, object]:
        return {"type": self.kind, **asdict(self)}


Record = ProcessSample | HostSample | TargetGone


CONNECTIONS_EVERY = 10


def _or_none(call: Callable[[], int]) -> int | None:
    try:
        return call()
    except (psutil.AccessDenied, psutil.ZombieProcess, OSError, NotImplementedError):
        return None


class ProcessSampler:
    """Samples targets and the host. Not thread-safe; one owner calls ``sample``."""

    def __init__(self, targets: Iterable[Target], *, full_memory: bool = True) -> None:
        self._procs: dict[int, tuple[Target, psutil.Process]] = {}
        self._conns: dict[int, int | None] = {}
        self._round = 0
        self.gone: list[TargetGone] = []
        self._full_memory = full_memory
        for target in targets:
            self.add(target)
        psutil.cpu_percent(None)  # prime the host counter

    def add(self, target: Target) -> None:
        try:
            proc = psutil.Process(target.pid)
            proc.cpu_percent(None)  # prime: the first call always returns 0.0
        except psutil.NoSuchProcess:
            self.gone.append(TargetGone(time.time(), target.pid, target.label))
            return
        self._procs[target.pid] = (target, proc)

    @property
    def live(self) -> list[Target]:
        return [t for t, _ in self._procs.values()]

    def _one(self, now: float, target: Target, proc: psutil.Process) -> ProcessSample:
        with proc.oneshot():
            cpu = proc.cpu_percent(None)
            mem = proc.memory_info()
            uss: int | None = None
            pss: int | None = None
            if self._full_memory:
                try:
                    full = proc.memory_full_info()
                    uss = int(full.uss)
                    pss = int(getattr(full, "pss", 0)) or None
                except (psutil.AccessDenied, OSError):
                    pass
            threads = proc.num_threads()
            fds = _or_none(proc.num_fds)
            # reading every socket of the process is the costliest call here: every
            # CONNECTIONS_EVERY rounds, the last count in between
            if self._round % CONNECTIONS_EVERY == 0 or target.pid not in self._conns:
                self._conns[target.pid] = _or_none(lambda: len(proc.net_connections(kind="inet")))
            conns = self._conns[target.pid]
            read_b: int | None
            write_b: int | None
            try:
                io = proc.io_counters()
                read_b, write_b = int(io.read_bytes), int(io.write_bytes)
            except (psutil.AccessDenied, AttributeError, OSError):
                read_b = write_b = None
        return ProcessSample(
            now, target.pid, target.label, cpu, int(mem.rss), uss, pss, threads, fds, conns,
            read_b, write_b,
        )  # fmt: skip

    def sample(self) -> list[Record]:
        """One round: a sample per live target, ``TargetGone`` for each that exited, host."""
        now = time.time()
        self._round += 1
        out: list[Record] = []
        for pid, (target, proc) in list(self._procs.items()):
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    raise psutil.NoSuchProcess(pid)
                out.append(self._one(now, target, proc))
            except psutil.NoSuchProcess:
                del self._procs[pid]
                gone = TargetGone(now, pid, target.label)
                self.gone.append(gone)
                out.append(gone)
            except psutil.AccessDenied:
                continue
        mem = psutil.virtual_memory()
        net = psutil.net_io_counters()
        out.append(
            HostSample(
                now,
                psutil.cpu_percent(None),
                int(mem.total),
                int(mem.available),
                int(net.bytes_sent) if net else 0,
                int(net.bytes_recv) if net else 0,
            )
        )
        return out

    async def run(
        self,
        emit: Callable[[Record], None],
        stop: asyncio.Event,
        interval: float = 1.0,
    ) -> None:
        """Sample every ``interval`` s until ``stop`` is set, handing each record to ``emit``.

        Sampling runs in a worker thread (smaps reads can take milliseconds on big
        processes), so the event loop never stalls.
        """
        next_at = time.monotonic()
        while not stop.is_set():
            for record in await asyncio.to_thread(self.sample):
                emit(record)
            next_at += interval
            delay = max(0.0, next_at - time.monotonic())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
