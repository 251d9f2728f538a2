"""The report as a pure function of the bundle: read every probe's events back, run each
area's analysis, add the cross-layer findings, rank them on one scale.

Used by the end of ``run``/``demo``, by ``report`` and ``compare`` offline, and (every
few seconds) by the live view, so the TUI and the headless report never disagree. Works on
complete, interrupted and killed bundles alike: what is missing is said in ``notes``.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from diag import attribution, callsites, contention
from diag import load as load_analysis
from diag.bundle import Bundle
from diag.findings import Finding, rank
from diag.gates import evaluate_all
from diag.render import REPORT_FILES, render
from diag.report import Report
from probes.targets import Target

if TYPE_CHECKING:
    from diag.live import LiveSnapshot
    from probes.locust import LoadResult


T = TypeVar("T")

# ---- reading the bundle back -------------------------------------------------------------


def measured_window(bundle: Bundle) -> tuple[float | None, float | None]:
    """(start, end) of the measured phase in epoch seconds (None: unknown/still running)."""
    start = end = None
    for event in bundle.events("session"):
        if event.get("phase") == "measuring":
            start = float(event["t"])
        elif event.get("phase") in ("stopping", "done") and start is not None and end is None:
            end = float(event["t"])
    return start, end


def targets_of(bundle: Bundle) -> list[Target]:
    out = []
    for t in bundle.manifest.get("targets") or []:
        out.append(
            Target(
                pid=int(t["pid"]),
                name=str(t.get("name", "")),
                cmdline=tuple(t.get("cmdline") or ()),
                spec=str(t.get("spec", "")),
                role=str(t.get("role", "")),
            )
        )
    return out


def _local(bundle: Bundle, path: str | None, probe: str) -> Path | None:
    """An artefact path recorded at run time, found again if the bundle was moved."""
    if not path:
        return None
    p = Path(path)
    if p.is_file():
        return p
    moved = bundle.artefacts(probe) / p.name
    return moved if moved.is_file() else None


# ---- load --------------------------------------------------------------------------------


def _load_result(bundle: Bundle) -> LoadResult | None:
    from probes.loadshapes import ShapePlan
    from probes.locust import EndpointRow, ErrorRow, LoadResult, LoadTick, StageSummary

    final = None
    for event in bundle.events("load_result"):
        final = event
    if final is None:
        return None
    ticks = tuple(LoadTick.from_json(e) for e in bundle.events("load") if e.get("type") == "tick")
    return LoadResult(
        host=str(final.get("host", "")),
        plan=ShapePlan.from_json(final["shape"]),
        started_at=final.get("started_at"),
        duration_s=float(final.get("duration_s") or 0.0),
        exit_code=final.get("exit_code"),
        stop_reason=final.get("stop_reason"),
        stopped_early=bool(final.get("stopped_early")),
        total=EndpointRow.from_json(final["total"]),
        endpoints=tuple(EndpointRow.from_json(e) for e in final.get("endpoints") or ()),
        errors=tuple(ErrorRow(**e) for e in final.get("errors") or ()),
        stages=tuple(StageSummary.from_json(s) for s in final.get("stages") or ()),
        ticks=ticks,
        dropped_lines=int(final.get("dropped_lines") or 0),
        stats_json=final.get("stats_json"),
        log_path=str(final.get("log_path", "")),
    )


def _row_json(row: Any) -> dict[str, Any]:
    return {
        "name": row.label,
        "method": row.method,
        "requests": row.requests,
        "failures": row.failures,
        "rps": row.rps,
        "avg_ms": row.avg_ms,
        "p50_ms": row.p50_ms,
        "p95_ms": row.p95_ms,
        "p99_ms": row.p99_ms,
        "max_ms": row.max_ms,
    }


def load_section(bundle: Bundle, t0: float) -> tuple[dict[str, Any] | None, list[Finding]]:
    from probes.locust import LoadTick

    ticks = [LoadTick.from_json(e) for e in bundle.events("load") if e.get("type") == "tick"]
    timeline = [
        {
            "t": round(t.t - t0, 2),
            "users": t.users,
            "rps": t.rps,
            "fails_per_s": t.fail_per_s,
            "p50_ms": t.p50_ms,
            "p95_ms": t.p95_ms,
            "p99_ms": t.p99_ms,
        }
        for t in ticks
    ]
    result = _load_result(bundle)
    findings: list[Finding] = []
    if result is not None:
        analysed = load_analysis.analyse(result)
        findings = list(analysed.findings)
        total = result.total
        rows = result.endpoints
        extra: dict[str, Any] = {
            "host": result.host,
            "shape": result.plan.kind,
            "stop_reason": result.stop_reason,
            "knee": analysed.knee.to_json() if analysed.knee else None,
            "recovery": analysed.recovery.to_json() if analysed.recovery else None,
        }
    else:
        last = _last_endpoints(bundle)
        if last is None and not ticks:
            return None, []
        rows_all = last.rows if last is not None else ()
        aggregate = [r for r in rows_all if r.name == "Aggregated"]
        rows = tuple(r for r in rows_all if r.name != "Aggregated")
        extra = {"partial": "the run ended before Locust's final figures were written"}
        if aggregate:
            total = aggregate[0]
        else:
            requests = ticks[-1].total_requests if ticks else 0
            failures = ticks[-1].total_failures if ticks else 0
            recent = [t for t in ticks if t.p95_ms is not None][-10:]
            return {
                **extra,
                "totals": {
                    "requests": requests,
                    "failures": failures,
                    "error_rate": failures / requests if requests else 0.0,
                    "rps": ticks[-1].total_requests / ticks[-1].elapsed
                    if ticks and ticks[-1].elapsed
                    else 0.0,
                    # the last ten seconds' worst p95 while the run is still going
                    "p95_ms": max((t.p95_ms or 0.0) for t in recent) if recent else None,
                },
                "endpoints": [_row_json(r) for r in sorted(rows, key=lambda r: -r.requests)],
                "timeline": timeline,
            }, []
    totals = {
        "requests": total.requests,
        "failures": total.failures,
        "error_rate": total.failures / total.requests if total.requests else 0.0,
        "rps": total.rps,
        "avg_ms": total.avg_ms,
        "p50_ms": total.p50_ms,
        "p95_ms": total.p95_ms,
        "p99_ms": total.p99_ms,
        "max_ms": total.max_ms,
    }
    endpoints = [_row_json(r) for r in sorted(rows, key=lambda r: -r.requests)]
    return {**extra, "totals": totals, "endpoints": endpoints, "timeline": timeline}, findings


def _last_endpoints(bundle: Bundle) -> Any:
    """The last cumulative endpoint snapshot, or None (only that one is converted)."""
    from probes.locust import EndpointsSnapshot

    found = None
    for e in bundle.events("load"):
        if e.get("type") == "endpoints":
            found = e
    return EndpointsSnapshot.from_json(found) if found is not None else None


def request_series(bundle: Bundle) -> list[tuple[float, float]]:
    """(time, cumulative requests served) from the load ticks, for leak fitting."""
    return [
        (float(e["t"]), float(e["total_requests"]))
        for e in bundle.events("load")
        if e.get("type") == "tick" and "total_requests" in e
    ]


def request_counts(bundle: Bundle, start: float | None, end: float | None) -> dict[str, int]:
    """Requests per endpoint inside the measured window (for N+1 detection), from the
    cumulative endpoint snapshots nearest the window's ends. Only those two are converted:
    a long run has thousands, each with every endpoint's histogram, and the live view
    asks on every pass."""
    from probes.locust import EndpointsSnapshot

    before = upto = latest = None
    for e in bundle.events("load"):
        if e.get("type") != "endpoints":
            continue
        t = float(e["t"])
        if start is not None and t <= start:
            before = e
        if end is None or t <= end + 1:
            upto = e
        latest = e
    if latest is None:
        return {}
    first = EndpointsSnapshot.from_json(before) if before is not None else None
    last = EndpointsSnapshot.from_json(upto if upto is not None else latest)
    base = {r.label: r.requests for r in first.rows} if first else {}
    return {
        r.label: r.requests - base.get(r.label, 0)
        for r in last.rows
        if r.name != "Aggregated" and r.requests - base.get(r.label, 0) > 0
    }


# ---- profilers ---------------------------------------------------------------------------


def _process_sample(e: Mapping[str, Any]) -> Any:
    from probes.process import ProcessSample

    names = {f.name for f in dataclasses.fields(ProcessSample)}
    return ProcessSample(**{k: v for k, v in e.items() if k in names})


class _PassCache:
    """Parsed artefacts (py-spy windows, memray captures) by file identity, kept from one
    analysis pass to the next and no longer: the live view re-analyses the same recent
    windows every few seconds, so what the last pass did not read is stale. (An LRU by
    count kept up to 256 stale windows of a long run; without them the 10-minute live
    demo ended at 120 MiB instead of 132.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._previous: dict[tuple[Any, ...], Any] = {}
        self._current: dict[tuple[Any, ...], Any] = {}

    def next_pass(self) -> None:
        with self._lock:
            self._previous, self._current = self._current, {}

    def get(self, key: tuple[Any, ...], load: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._current:
                return self._current[key]
            if key in self._previous:
                self._current[key] = self._previous.pop(key)
                return self._current[key]
        value = load()  # outside the lock: a capture takes seconds to read
        with self._lock:
            self._current[key] = value
        return value

    def entries(self, kind: str) -> dict[tuple[Any, ...], Any]:
        """What the last two passes parsed of one ``kind`` ("memray", "pyspy")."""
        with self._lock:
            both = {**self._previous, **self._current}
        return {k: v for k, v in both.items() if k[0] == kind}

    def adopt(self, entries: Mapping[tuple[Any, ...], Any]) -> None:
        """Take entries parsed elsewhere (by the worker this process replaces) as if the
        last pass had read them (between passes: the next one starts with ``next_pass``)."""
        with self._lock:
            for key, value in entries.items():
                self._current.setdefault(key, value)


_ARTEFACTS = _PassCache()


def parsed_captures() -> dict[tuple[Any, ...], Any]:
    """The memray captures parsed so far (seconds of CPU each), for a successor worker."""
    return _ARTEFACTS.entries("memray")


def adopt_captures(entries: Mapping[tuple[Any, ...], Any]) -> None:
    _ARTEFACTS.adopt(entries)


def _read_collapsed(path: Path) -> Any:
    from probes.pyspy import read_collapsed

    return _ARTEFACTS.get(("pyspy", *_identity(path)), lambda: read_collapsed(path))


def _read_capture(path: Path, pid: int) -> Any:
    """A capture, kept in memory with only the locations that ever held 64 KiB or more
    (leak suspects need 256 KiB of growth): a busy window has thousands of tiny ones."""
    from probes.memray import read_capture

    return _ARTEFACTS.get(
        ("memray", *_identity(path), pid),
        lambda: read_capture(path, pid, min_peak_bytes=64 << 10),
    )


def _identity(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size


def _pyspy_window(bundle: Bundle, e: Mapping[str, Any]) -> Any:
    from probes.pyspy import PySpyWindow

    path = _local(bundle, e.get("path"), "pyspy")
    stacks = _read_collapsed(path) if path is not None and not e.get("error") else None
    return PySpyWindow(
        pid=int(e["pid"]),
        label=str(e["label"]),
        mode=str(e["mode"]),
        started=float(e["started"]),
        duration=float(e["duration"]),
        rate=int(e["rate"]),
        path=str(path or e.get("path") or ""),
        samples=int(e.get("samples") or 0),
        distinct_stacks=int(e.get("distinct_stacks") or 0),
        bad_lines=int(e.get("bad_lines") or 0),
        warnings=tuple(e.get("warnings") or ()),
        error=e.get("error") if stacks is not None or e.get("error") else "capture file missing",
        stacks=stacks,
    )


def _memray_window(bundle: Bundle, e: Mapping[str, Any]) -> Any:
    from probes.memray import CaptureError, MemrayWindow

    path = _local(bundle, e.get("path"), "memray")
    capture = None
    error = e.get("error")
    if path is not None and not error:
        try:
            capture = _read_capture(path, int(e["pid"]))
        except CaptureError as exc:
            error = str(exc)
    return MemrayWindow(
        pid=int(e["pid"]),
        label=str(e["label"]),
        started=float(e["started"]),
        duration=float(e["duration"]),
        path=str(path) if path else None,
        error=error,
        capture=capture,
    )


def profiler_section(
    bundle: Bundle, start: float | None, recent_windows: int | None = None
) -> tuple[list[dict[str, Any]], list[Finding], list[dict[str, Any]], list[str], list[Any]]:
    """Per-target reports → (processes, findings, hotspots, notes, wall windows)."""
    from diag.profiling import Collected, ProfileOptions, analyse

    targets = targets_of(bundle)
    if not targets:
        return [], [], [], [], []
    collected = {t.pid: Collected(t) for t in targets}
    for e in bundle.events("process"):
        if e.get("type") == "process" and int(e.get("pid", -1)) in collected:
            collected[int(e["pid"])].samples.append(_process_sample(e))
        elif e.get("type") == "gone" and int(e.get("pid", -1)) in collected:
            collected[int(e["pid"])].gone = True
    walls: list[Any] = []
    events = list(bundle.events("pyspy"))
    if recent_windows is not None:  # the live view: the last few windows per process
        kept: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
        for e in events:
            kept.setdefault((e.get("pid"), e.get("mode")), []).append(e)
        events = [e for group in kept.values() for e in group[-recent_windows:]]
    for e in events:
        c = collected.get(int(e.get("pid", -1)))
        if c is None:
            continue
        window = _pyspy_window(bundle, e)
        if window.error:
            if window.error not in c.errors:
                c.errors.append(window.error)
            continue
        (c.cpu if window.mode == "cpu" else c.wall).append(window)
        walls.append(window)
    for e in bundle.events("memray"):
        c = collected.get(int(e.get("pid", -1)))
        if c is not None:
            c.memray = _memray_window(bundle, e)
            if c.memray.error:
                c.errors.append(c.memray.error)
    options = bundle.manifest.get("options") or {}
    opts = ProfileOptions(
        out_dir=bundle.artefacts("profiles"),
        rate=int(options.get("rate") or 100),
        # a live pass's profile covers its recent windows only: the report's exports are
        # the final pass's (writing them every pass cost a few MiB and ms each time)
        exports=recent_windows is None,
    )
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    requests = request_series(bundle)
    processes: list[dict[str, Any]] = []
    findings: list[Finding] = []
    hotspots: list[dict[str, Any]] = []
    notes: list[str] = []
    for c in collected.values():
        if start is not None:  # leak verdicts see the measured window only
            c.samples = [s for s in c.samples if s.t >= start]
        if c.memray is not None:
            c.samples = without_memray_step(c.samples, c.memray.started, c.memray.duration)
        report = analyse(c, opts, requests=requests or None)
        findings.extend(report.findings)
        notes.extend(f"{c.target.label}: {err}" for err in report.errors)
        processes.append(_process_json(c, report))
        top = report.profile.stats[:10]
        stacks = top_stacks(c.cpu, {st.label for st in top})
        for stat in top:
            hotspots.append(
                {**stat.to_json(), "process": c.target.label, "stacks": stacks.get(stat.label, [])}
            )
    return processes, findings, hotspots, notes, walls


def without_memray_step(samples: list[Any], started: float, duration: float) -> list[Any]:
    """The series with a memray window cut out and the memory it left behind (its tracker,
    a few MiB that stay after detaching) subtracted from what follows, so the attach is not
    read as a leak. The process's own growth during the window is lost with it, which
    only lowers the slope estimate's sample count."""
    before = [s for s in samples if s.t < started - 1.0]
    after = [s for s in samples if s.t > started + duration + 2.0]
    if len(before) < 3 or len(after) < 3:
        return [s for s in samples if not started - 1.0 <= s.t <= started + duration + 2.0]

    def median(values: list[float]) -> float:
        values = sorted(values)
        return values[len(values) // 2]

    def step(metric: str) -> int:
        pre = [float(getattr(s, metric)) for s in before[-3:] if getattr(s, metric) is not None]
        post = [float(getattr(s, metric)) for s in after[:3] if getattr(s, metric) is not None]
        return int(median(post) - median(pre)) if pre and post else 0

    steps = {m: step(m) for m in ("rss", "uss", "pss")}

    def shifted(s: Any) -> Any:
        changes = {m: getattr(s, m) - d for m, d in steps.items() if getattr(s, m) is not None}
        return dataclasses.replace(s, **changes)

    return before + [shifted(s) for s in after]


def top_stacks(windows: Iterable[Any], labels: set[str], per: int = 3) -> dict[str, list[str]]:
    """For each function label: its heaviest folded stacks ("a;b;c", root first)."""
    from diag.hotspots import fold_stack, frame_label, is_plumbing

    counts: dict[str, Counter[str]] = {}
    for w in windows:
        if w.stacks is None:
            continue
        for stack, n in w.stacks.stacks.items():
            folded = fold_stack(stack)
            if folded is None:
                continue
            label = frame_label(folded.self_frame)
            if label not in labels:
                continue
            kept = [frame_label(f) for f in stack if f[1] and not is_plumbing(f)]
            counts.setdefault(label, Counter())[";".join(kept)] += n
    return {label: [s for s, _ in c.most_common(per)] for label, c in counts.items()}


def _process_json(c: Any, report: Any) -> dict[str, Any]:
    samples = c.samples
    step = max(1, len(samples) // 300)
    series = [[round(s.t, 2), s.cpu_percent, s.rss] for s in samples[::step]]
    verdict = _memory_verdict(report.verdicts)
    return {
        "label": c.target.label,
        "pid": c.target.pid,
        "role": c.target.role,
        "gone": c.gone,
        "cpu_mean": sum(s.cpu_percent for s in samples) / len(samples) if samples else 0.0,
        "cpu_max": max((s.cpu_percent for s in samples), default=0.0),
        "rss_start": samples[0].rss if samples else 0,
        "rss_end": samples[-1].rss if samples else 0,
        "rss_max": max((s.rss for s in samples), default=0),
        "threads_end": samples[-1].threads if samples else 0,
        "fds_end": samples[-1].fds if samples else None,
        "leak_verdict": verdict,
        "leak_verdicts": [v.to_json() for v in report.verdicts],
        "wall_breakdown": report.breakdown.to_json() if report.breakdown else None,
        "cpu_samples": report.profile.samples,
        "artefacts": report.artefacts,
        "series": series,
    }


def _memory_verdict(verdicts: Iterable[Any]) -> str:
    """One short line for the memory metric: "heap leak: +2.1 MiB/1k req", "no leak"..."""
    from diag.units import format_bytes

    for v in verdicts:
        if v.metric not in ("rss", "uss"):
            continue
        if v.status == "leak":
            rate = (
                f"+{format_bytes(v.per_1k_requests)}/1k req"
                if v.per_1k_requests is not None
                else f"+{format_bytes(v.per_second * 60)}/min"
            )
            return f"{str(v.kind or 'leak').replace('_', ' ')}: {rate}"
        words: dict[str, str] = {
            "filling": "filling then plateau (cache?)",
            "no_leak": "no leak",
            "not_enough_data": "not enough data",
        }
        return words.get(str(v.status), str(v.status))
    return "not enough data"


# ---- database ----------------------------------------------------------------------------


# (stream file, window length) -> the offset of the oldest line the last live pass kept:
# the window only moves forward, so the next pass reads from there (a pass costs the
# window, not the run)
_RECENT_FROM: dict[tuple[Path, float], int] = {}


def _recent(
    bundle: Bundle, stream: str, seconds: float, convert: Callable[[dict[str, Any]], T]
) -> list[T]:
    """``convert`` of the events of the last ``seconds`` before the newest one (streamed
    from where the last pass's window began: a long run's stream is never held whole,
    nor read whole on every refresh)."""
    key = (bundle.path / "events" / stream, seconds)
    kept: deque[tuple[float, int, T]] = deque()
    for offset, e in bundle.events_from(stream, _RECENT_FROM.get(key, 0)):
        newest = float(e.get("t") or 0.0)
        kept.append((newest, offset, convert(e)))
        while kept[0][0] < newest - seconds:
            kept.popleft()
    if kept:
        if len(_RECENT_FROM) > 64:
            _RECENT_FROM.clear()
        _RECENT_FROM[key] = kept[0][1]
    return [record for _, _, record in kept]


class _StatementWalk:
    """Reads pg_statements snapshots one at a time, for ``_recent`` or a whole stream:
    each gives (taken_at, database time since the one before), and the walk keeps the
    last. Two snapshots are held at a time, not a window's dozens (each has every
    statement) or a soak's thousands."""

    def __init__(self) -> None:
        self.last: Any = None

    def __call__(self, e: dict[str, Any]) -> tuple[float, Any]:
        from probes.postgres.statements import StatementSnapshot, timeline

        snap = StatementSnapshot.from_json(e)
        point = timeline((self.last, snap))[0] if self.last is not None else None
        self.last = snap
        return snap.taken_at, point


def db_section(
    bundle: Bundle, counts: Mapping[str, int], recent_s: float | None = None
) -> tuple[dict[str, Any] | None, list[Finding], list[dict[str, Any]], list[str], list[Any]]:
    """(database section, findings, plans, notes, activity samples).

    ``recent_s`` (the live view of a running session): activity samples and the database
    timeline of the last ``recent_s`` seconds only, statements from the first snapshot to
    the latest, so each refresh costs the same however long the run has lasted."""
    from diag.dbanalysis import analyze_window, summarize_waits
    from probes.postgres.activity import ActivitySample
    from probes.postgres.statements import StatementSnapshot, StatementText, diff

    walk = _StatementWalk()
    if recent_s is None:
        steps = [walk(e) for e in bundle.events("pg_statements")]
        samples = [ActivitySample.from_json(e) for e in bundle.events("pg_activity")]
    else:
        steps = _recent(bundle, "pg_statements", recent_s, walk)
        samples = _recent(bundle, "pg_activity", recent_s, ActivitySample.from_json)
    # statements from the run's first snapshot to its latest; the timeline from the pairs
    # of consecutive snapshots read (the first one read pairs with nothing kept)
    snapshots: list[Any] = []
    first = next(iter(bundle.events("pg_statements")), None)
    if walk.last is not None and first is not None:
        if first.get("taken_at") != walk.last.taken_at:
            snapshots.append(StatementSnapshot.from_json(first))
        snapshots.append(walk.last)
    if not snapshots and not samples:
        return None, [], [], [], []
    notes: list[str] = []
    final = None
    for e in bundle.events("pg_report"):
        final = e
    db_timeline = [
        (round(p.t, 2), round(p.db_time_ms_per_s, 2)) for _, p in steps[1:] if p is not None
    ]
    if final is not None:
        findings = [Finding.from_json(f) for f in final.get("findings") or []]
        plans = [
            {"queryid": int(k), **v, "source": (v.get("plan") or {}).get("source")}
            for k, v in (final.get("plans") or {}).items()
        ]
        for p in plans:
            p["tree"] = _plan_tree(p.get("plan"))
            p["tips"] = plan_tips(p.get("tips"))
        section = {
            "window": final.get("window"),
            "top": (final.get("top") or {}).get("total_exec_ms", [])[:15],
            "waits": final.get("waits"),
            "health": final.get("health"),
            "timeline": db_timeline,
            "server_version": final.get("server_version"),
        }
        notes.extend(final.get("notes") or [])
        return section, findings, plans, notes, samples
    if len(snapshots) < 2:
        notes.append("database: fewer than two statement snapshots; no statement analysis")
        return {"timeline": [], "waits": summarize_waits(samples).to_json()}, [], [], notes, samples
    texts = {
        int(e["queryid"]): StatementText(
            int(e["queryid"]), str(e["query"]), bool(e.get("is_probe"))
        )
        for e in bundle.events("pg_texts")
    }
    window = diff(snapshots[0], snapshots[-1])
    findings = analyze_window(window, texts, samples, request_counts=counts or None)
    if bundle.status != "running":
        notes.append("database: run ended before plans and health were read; statements only")
    db_time = sum(
        s.total_exec_ms
        for s in window.statements
        if s.queryid in texts and not texts[s.queryid].is_probe
    )
    top = [
        {
            **s.to_json(),
            "query": texts[s.queryid].query,
            "share_of_db_time": s.total_exec_ms / db_time if db_time else 0.0,
        }
        for s in sorted(window.statements, key=lambda s: -s.total_exec_ms)
        if s.queryid in texts and not texts[s.queryid].is_probe
    ][:15]
    section = {"timeline": db_timeline, "waits": summarize_waits(samples).to_json(), "top": top}
    return section, findings, [], notes, samples


def plan_tips(tips: Any) -> list[str]:
    """Plan tips as sentences: "what — advice (saves ~N ms)"."""
    out = []
    for t in tips or []:
        if not isinstance(t, Mapping):
            out.append(str(t))
            continue
        text = str(t.get("message") or t.get("text") or t.get("kind") or "")
        if t.get("node"):
            text = f"{t['node']}: {text}"
        if t.get("advice"):
            text += f" — {t['advice']}"
        if t.get("saving_ms"):
            text += f" (could save ~{float(t['saving_ms']):.0f} ms)"
        out.append(text)
    return out


def _plan_tree(plan: Any) -> str:
    """An indented text tree of a stored plan JSON."""
    if not isinstance(plan, Mapping):
        return ""
    root = plan.get("root") or plan.get("Plan") or plan.get("plan") or plan
    lines: list[str] = []

    def walk(node: Any, depth: int) -> None:
        if not isinstance(node, Mapping) or depth > 40:
            return
        name = node.get("node_type") or node.get("Node Type") or "?"
        rel = node.get("relation") or node.get("Relation Name")
        idx = node.get("index_name") or node.get("Index Name")
        rows = node.get("actual_rows", node.get("Actual Rows"))
        est = node.get("plan_rows", node.get("Plan Rows"))
        ms = node.get("inclusive_ms", node.get("Actual Total Time"))
        bits = [str(name)]
        if rel:
            bits.append(f"on {rel}")
        if idx:
            bits.append(f"using {idx}")
        if est is not None:
            bits.append(f"(est {est} rows")
            bits[-1] += f", actual {rows})" if rows is not None else ")"
        if ms is not None:
            bits.append(f"{float(ms):.1f} ms")
        lines.append("  " * depth + "-> " + " ".join(bits))
        for child in node.get("children") or node.get("Plans") or []:
            walk(child, depth + 1)

    walk(root, 0)
    return "\n".join(lines)


# ---- KPI queries -------------------------------------------------------------------------


def kpi_section(bundle: Bundle) -> list[dict[str, Any]]:
    """One summary per KPI (``diag.kpi.summarize``) from the ``kpi`` stream, in the
    configured order; a configured KPI that never produced a value is listed with 0
    samples (so reports and gates can say so)."""
    from diag.kpi import summarize

    options = bundle.manifest.get("options") or {}
    units: dict[str, str] = {}
    for spec in options.get("kpis") or []:
        if isinstance(spec, Mapping) and spec.get("name"):
            units[str(spec["name"])] = str(spec.get("unit") or "")
    samples: dict[str, list[tuple[float, float | None]]] = {name: [] for name in units}
    for e in bundle.events("kpi"):
        name = str(e.get("name", ""))
        if not name:
            continue
        units.setdefault(name, str(e.get("unit") or ""))
        value = e.get("value")
        number = float(value) if isinstance(value, (int, float)) else None
        samples.setdefault(name, []).append((float(e["t"]), number))
    if not samples:
        return []
    start, end = measured_window(bundle)
    return [
        summarize(name, units[name], points, bundle.started_at, start, end)
        for name, points in samples.items()
    ]


# ---- the whole report --------------------------------------------------------------------


def _run_section(bundle: Bundle) -> dict[str, Any]:
    manifest = bundle.manifest
    options = dict(manifest.get("options") or {})
    started = bundle.started_at
    ended = bundle.ended_at
    return {
        "id": bundle.path.name,
        "bundle": str(bundle.path),
        "status": bundle.status,
        "started_at": started,
        "ended_at": ended,
        "duration_s": round(ended - started, 2) if ended else None,
        "tool_version": manifest.get("tool_version"),
        "command": manifest.get("command"),
        "targets": manifest.get("targets") or [],
        "options": options,
        "scenario": options.get("scenario") or options.get("locustfile"),
        "faults": options.get("faults"),
        "fail_on": options.get("fail_on") or [],
        "probes": manifest.get("probes") or {},
    }


def analyse(
    bundle: Bundle, *, recent_windows: int | None = None, recent_s: float | None = None
) -> Report:
    """The ranked report of one bundle (pure: reads only the bundle).

    ``recent_windows``: profile only the last N py-spy windows per process; ``recent_s``:
    database activity and timeline of the last N seconds only. Both are for the live view
    of a long run (bounded memory and time per refresh); the report itself uses it all."""
    _ARTEFACTS.next_pass()
    run = _run_section(bundle)
    start, end = measured_window(bundle)
    notes: list[str] = []
    if bundle.status == "killed":
        notes.append(
            "the run was killed before it finished: this report covers what was "
            "collected until then"
        )
    load, findings = load_section(bundle, bundle.started_at)
    counts = request_counts(bundle, start, end)
    processes, prof_findings, hotspots, prof_notes, windows = profiler_section(
        bundle, start, recent_windows
    )
    walls = [w for w in windows if w.mode == "wall"]
    database, db_findings, plans, db_notes, samples = db_section(bundle, counts, recent_s)
    findings += prof_findings + db_findings
    notes += prof_notes + db_notes
    findings += contention.event_loop_findings(walls)
    findings += contention.pool_findings(samples, targets_of(bundle), load)
    findings = contention.dedupe(findings)
    shapes = {
        int(e["queryid"]): callsites.Shape.of(str(e["query"]))
        for e in bundle.events("pg_texts")
        if not e.get("is_probe")
    }
    calls = [*bundle.events("callsites"), *callsites.profiled_calls(windows, shapes)]
    findings = attribution.attach_endpoints(
        findings,
        attribution.handlers_by_function(windows),
        callsites.statement_handlers(calls),
        load,
    )
    findings = callsites.attach_callsites(findings, calls)
    for e in bundle.events("notices"):
        text = str(e.get("text", ""))
        if text and text not in notes:
            notes.append(text)
    return Report(
        run=run,
        load=load,
        processes=processes,
        database=database,
        findings=rank(findings),
        hotspots=hotspots,
        plans=plans,
        notes=notes,
        kpis=kpi_section(bundle),
    )


def write_reports(
    bundle: Bundle,
    out_dir: Path,
    formats: Iterable[str] = REPORT_FILES,
    fail_on: Iterable[str] = (),
    baseline: Report | None = None,
) -> dict[str, Path]:
    """Analyse, evaluate gates, write every format; returns format -> path."""
    report = analyse(bundle)
    exprs = list(fail_on) or list(report.run.get("fail_on") or [])
    if exprs:
        report = report.with_gates(evaluate_all(exprs, report, baseline))
    written = {}
    for fmt in formats:
        path = out_dir / REPORT_FILES[fmt]
        path.write_text(render(report, fmt, color=False))
        written[fmt] = path
    return written


# The live view profiles the last 12 py-spy windows (a minute of 5 s windows). Two
# minutes made the live process's memory rise for its first two minutes while they filled
# (+3 to 4 MiB from minute 1 to 2 of the bench) for a ranking that is no more useful
# during an incident; the report still covers the whole run.
LIVE_WINDOWS = 12


def report_view(bundle: Bundle, *, final: bool = False) -> LiveSnapshot:
    """The live view's analysis (run by ``diag.liveworker``): while running, profiles and
    database activity of the last minute (12 windows of 5 s; statements count from the
    run's start); once the run is over (``final``), exactly the report's analysis."""
    from diag.liveview import snapshot_from

    report = (
        analyse(bundle)
        if final
        else analyse(bundle, recent_windows=LIVE_WINDOWS, recent_s=LIVE_WINDOWS * 5.0)
    )
    return snapshot_from(report, bundle)
