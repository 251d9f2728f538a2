"""Profilers only (``archon-diag profile``): run py-spy / memray / process-series windows
on targets for a bounded time, then turn them into per-process reports and findings.

``collect(targets, options, emit)`` is the asyncio part (subprocesses, never blocking the
loop; every record goes to ``emit`` as it arrives); ``analyse(collected, options)`` is
pure CPU work (call it from a thread in a live UI). Per target: the memray attach (gdb)
happens first, then py-spy windows (a CPU recording and, concurrently, a non-blocking
``--idle`` wall recording), while psutil samples every target at 1 Hz. A target that
exits is marked gone; the others go on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diag import hotspots, leaks
from diag.findings import Finding, rank
from probes.memray import MemrayRecorder, MemrayWindow, memray_unavailable
from probes.process import ProcessSample, ProcessSampler, Record, TargetGone
from probes.pyspy import PySpyRecorder, PySpyWindow, record_window, wall_rate
from probes.targets import Target, alive

Emit = Callable[[Any], None]


@dataclass(frozen=True)
class ProfileOptions:
    out_dir: Path
    duration: float = 10.0
    rate: int = 100
    window: float = 5.0
    nonblocking: bool = True  # --blocking: the CPU recording pauses the target per sample
    wall: bool = True  # a concurrent --idle recording for the wall-time breakdown
    memray: bool = False
    memray_duration: float | None = None  # default: the whole run (after the attach)
    memory_limit: float | None = None  # default: cgroup limit or host RAM
    exports: bool = True  # write speedscope and collapsed files (the live view does not)


@dataclass
class Collected:
    """Everything the probes produced for one target."""

    target: Target
    cpu: list[PySpyWindow] = field(default_factory=list)
    wall: list[PySpyWindow] = field(default_factory=list)
    samples: list[ProcessSample] = field(default_factory=list)
    memray: MemrayWindow | None = None
    errors: list[str] = field(default_factory=list)
    gone: bool = False


@dataclass(frozen=True)
class TargetReport:
    target: Target
    gone: bool
    errors: tuple[str, ...]
    profile: hotspots.Profile
    breakdown: hotspots.WallBreakdown | None
    verdicts: tuple[leaks.LeakVerdict, ...]
    suspects: tuple[leaks.Suspect, ...]
    findings: tuple[Finding, ...]
    artefacts: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target.to_json(),
            "gone": self.gone,
            "errors": list(self.errors),
            "cpu_samples": self.profile.samples,
            "profile_seconds": round(self.profile.seconds, 2),
            "hotspots": [s.to_json() for s in self.profile.stats[:15]],
            "wall_breakdown": self.breakdown.to_json() if self.breakdown else None,
            "leak_verdicts": [v.to_json() for v in self.verdicts],
            "memray_suspects": [s.to_json() for s in self.suspects[:10]],
            "artefacts": self.artefacts,
        }


def _note(emit: Emit | None, record: Any) -> None:
    if emit is not None:
        emit(record)


async def _memray_start(
    c: Collected, opts: ProfileOptions, gdb_lock: asyncio.Lock
) -> MemrayRecorder | None:
    why = await asyncio.to_thread(memray_unavailable, c.target.pid)
    if why is not None:
        c.errors.append(why)
        return None
    async with gdb_lock:  # one gdb at a time: concurrent injections crawl on small hosts
        return await _memray_attach(c, opts)


async def _memray_attach(c: Collected, opts: ProfileOptions) -> MemrayRecorder:
    rec = MemrayRecorder(
        c.target.pid,
        opts.out_dir,
        label=c.target.label,
        duration=opts.memray_duration or opts.duration,
    )
    rec.start()
    # gdb and a blocking py-spy both ptrace: let the attach finish before sampling.
    while not rec.attach_finished():
        await asyncio.sleep(0.05)
    return rec


async def _memray_finish(c: Collected, rec: MemrayRecorder, emit: Emit | None) -> None:
    deadline = time.monotonic() + 30.0
    while not rec.poll():
        if time.monotonic() > deadline:
            await asyncio.to_thread(rec.stop)
            deadline = time.monotonic() + 30.0
        await asyncio.sleep(0.1)
    window = await asyncio.to_thread(rec.result)
    c.memray = window
    if not alive(c.target.pid):
        c.gone = True
    elif window.error:
        c.errors.append(window.error)
    _note(emit, window)


async def _pyspy_loop(
    c: Collected, opts: ProfileOptions, deadline: float, emit: Emit | None
) -> None:
    n = 0
    while not c.gone:
        remaining = deadline - time.monotonic()
        if remaining < 1.0:
            break
        length = min(opts.window, remaining)
        base = opts.out_dir / f"pyspy-{c.target.pid}-{n:03d}"
        recorders = [
            PySpyRecorder(
                c.target.pid,
                base.with_suffix(".cpu.txt"),
                label=c.target.label,
                duration=length,
                rate=opts.rate,
                mode="cpu",
                nonblocking=opts.nonblocking,
            )
        ]
        if opts.wall:
            recorders.append(
                PySpyRecorder(
                    c.target.pid,
                    base.with_suffix(".wall.txt"),
                    label=c.target.label,
                    duration=length,
                    rate=wall_rate(opts.rate),
                    mode="wall",
                    nonblocking=True,
                )
            )
        windows = await asyncio.gather(*(record_window(r) for r in recorders))
        n += 1
        failed = False
        for w in windows:
            _note(emit, w)
            if w.error is not None:
                failed = True
                if not alive(c.target.pid):
                    c.gone = True
                elif w.error not in c.errors:
                    c.errors.append(w.error)
                continue
            (c.cpu if w.mode == "cpu" else c.wall).append(w)
            if w.warnings and w.warnings[0] not in c.errors:
                c.errors.append(w.warnings[0])
        if failed and not c.cpu:
            break  # the first window failed: permission or not Python; do not retry
        if not alive(c.target.pid):
            c.gone = True


async def collect(
    targets: list[Target], opts: ProfileOptions, emit: Emit | None = None
) -> list[Collected]:
    """Run every probe on every target for ``opts.duration`` seconds."""
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    collected = {t.pid: Collected(t) for t in targets}
    stop = asyncio.Event()
    sampler = ProcessSampler(targets)

    def on_record(record: Record) -> None:
        _note(emit, record)
        if isinstance(record, ProcessSample) and record.pid in collected:
            collected[record.pid].samples.append(record)
        elif isinstance(record, TargetGone) and record.pid in collected:
            collected[record.pid].gone = True

    series = asyncio.create_task(sampler.run(on_record, stop))

    gdb_lock = asyncio.Lock()

    async def one(c: Collected) -> None:
        rec = await _memray_start(c, opts, gdb_lock) if opts.memray else None
        # the measured window starts once memray is attached (gdb pauses the target)
        await _pyspy_loop(c, opts, time.monotonic() + opts.duration, emit)
        if rec is not None:
            await _memray_finish(c, rec, emit)

    start = time.monotonic()
    try:
        await asyncio.gather(*(one(c) for c in collected.values()))
        remaining = start + opts.duration - time.monotonic()  # all gone early: sample on
        if remaining > 0 and any(not c.gone for c in collected.values()):
            await asyncio.sleep(remaining)
    finally:
        stop.set()
        await series
    for c in collected.values():
        if c.gone:
            c.errors.insert(0, f"{c.target.label} exited during the run (marked gone)")
    return list(collected.values())


def analyse(
    c: Collected,
    opts: ProfileOptions,
    *,
    requests: Sequence[tuple[float, float]] | None = None,
) -> TargetReport:
    """Fold, classify and score one target's data; write its exports. CPU-heavy.

    ``requests``: (time, cumulative requests served) when a load ran, so memory is fitted
    against requests rather than time."""
    label = c.target.label
    cpu = hotspots.merge(w.stacks for w in c.cpu if w.stacks is not None)
    cpu_s = sum(w.duration for w in c.cpu)
    profile = hotspots.function_stats(cpu, seconds=cpu_s, rate=opts.rate)
    findings: list[Finding] = hotspots.hotspot_findings(profile, label)
    breakdown = None
    artefacts: dict[str, str] = {}
    if c.wall:
        wall = hotspots.merge(w.stacks for w in c.wall if w.stacks is not None)
        wall_s = sum(w.duration for w in c.wall)
        breakdown = hotspots.wall_breakdown(
            wall, cpu if c.cpu else None, wall_seconds=wall_s, cpu_seconds=cpu_s or 1.0
        )
    if cpu.stacks and opts.exports:
        base = opts.out_dir / f"profile-{c.target.pid}"
        speed = base.with_suffix(".speedscope.json")
        speed.write_text(json.dumps(hotspots.to_speedscope(cpu, label, opts.rate)))
        collapsed = base.with_suffix(".collapsed.txt")
        collapsed.write_text(hotspots.to_collapsed(cpu))
        artefacts = {"speedscope": str(speed), "collapsed": str(collapsed)}
    limit = opts.memory_limit or leaks.memory_limit_for(c.target.pid)
    heap = None
    suspects: list[leaks.Suspect] = []
    if c.memray is not None and c.memray.capture is not None:
        cap = c.memray.capture
        t0 = c.memray.started
        heap = [(t0 + t, float(h)) for t, h in zip(cap.times, cap.heap, strict=True)]
        suspects = leaks.memray_suspects(cap)
        rss_now = float(c.samples[-1].rss) if c.samples else float(cap.rss[-1])
        findings += leaks.suspect_findings(suspects, label, current_rss=rss_now, memory_limit=limit)
        artefacts["memray"] = cap.path
    fd_limit = None
    try:
        import psutil

        fd_limit = float(psutil.Process(c.target.pid).rlimit(psutil.RLIMIT_NOFILE)[0])
    except Exception:  # gone, or no permission: no projection for fds
        fd_limit = None
    verdicts = leaks.leak_verdicts(
        c.samples, requests=requests, heap=heap, memory_limit=limit, fd_limit=fd_limit
    )
    # a memray location that leaks supersedes the series verdict for memory (same leak,
    # better address); "filling" or "flat" locations do not silence a leaking series
    if not any(s.status == "leak" for s in suspects):
        findings += leaks.verdict_findings(verdicts)
    else:
        findings += leaks.verdict_findings([v for v in verdicts if v.kind != "memory_leak"])
    return TargetReport(
        c.target,
        c.gone,
        tuple(c.errors),
        profile,
        breakdown,
        tuple(verdicts),
        tuple(suspects),
        tuple(rank(findings)),
        artefacts,
    )
