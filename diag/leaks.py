"""Leak verdicts: from the process series (RSS, fds, threads) and from memray windows.

The recipe (FIELD-NOTES): skip the warm-up; fit the metric against requests served (or
time when there is no load) with a robust slope (Theil–Sen) and a trend test
(Mann–Kendall); demand that every sub-window grows and that the last one still grows at
a good fraction of the first (otherwise it is a cache filling up, which is not a leak);
then project the time to the limit. Too little data gives "not enough data", never a
verdict. Heap slope ≈ RSS slope is a heap leak; RSS rising over a flat heap is allocator
fragmentation; rising fds or threads is a resource leak.

memray windows: ``memray_suspects`` sums live bytes per application location (the
deepest app frame of each allocation stack) at every snapshot and ranks locations by
their Theil–Sen growth, with the same leak-vs-filling test per location.

Score (``leak_score``): the projected time to reach the limit mapped onto impact points:
1 h or less → 100, one week or more → 0, log-linear in between.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from diag.findings import Finding, Location
from diag.hotspots import frame_info, frame_label
from diag.units import format_bytes, format_duration
from probes.memray import MemrayCapture
from probes.process import ProcessSample
from probes.scalene import ScaleneProfile

MAX_POINTS = 400  # estimators are O(n^2): longer series are thinned evenly
MIN_POINTS = 20
MIN_SPAN_S = 20.0
SUBWINDOWS = 3
PLATEAU_RATIO = 0.3  # last sub-window slope below this share of the first: filling
P_LEAK = 0.01


def _thin(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    n = len(xs)
    if n <= MAX_POINTS:
        return list(xs), list(ys)
    idx = [round(i * (n - 1) / (MAX_POINTS - 1)) for i in range(MAX_POINTS)]
    return [xs[i] for i in idx], [ys[i] for i in idx]


def theil_sen(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Median of pairwise slopes, and the median intercept.

    >>> theil_sen([0, 1, 2, 3, 4], [1, 3, 5, 7, 100])
    (2.0, 1.0)
    """
    x, y = _thin(xs, ys)
    slope = _median_slope(x, y)
    if slope is None:
        return 0.0, (y[0] if y else 0.0)
    intercept = _median([yi - slope * xi for xi, yi in zip(x, y, strict=True)])
    return slope, intercept


def _slopes(x: Sequence[float], y: Sequence[float]) -> Iterator[float]:
    for i in range(len(x)):
        xi, yi = x[i], y[i]
        for j in range(i + 1, len(x)):
            if x[j] != xi:
                yield (y[j] - yi) / (x[j] - xi)


_SAMPLE = 2000  # pairs sampled to bracket the median slope


def _median_slope(x: Sequence[float], y: Sequence[float]) -> float | None:
    """The exact median of the pairwise slopes, without holding them all: 400 points have
    80,000 pairs (about 3 MiB as a list of floats, on every live pass). A sample of pairs
    brackets the median; one pass counts the slopes below the bracket and keeps those in
    it. If the bracket misses (a sample can), the slopes are all kept after all."""
    n = len(x)
    pairs = n * (n - 1) // 2
    if pairs <= 4 * _SAMPLE:
        return _median_of_all(x, y)
    rng = random.Random(n)  # any sample gives the same answer; a fixed one, the same time
    sample = []
    for _ in range(_SAMPLE):
        i, j = sorted(rng.sample(range(n), 2))
        if x[j] != x[i]:
            sample.append((y[j] - y[i]) / (x[j] - x[i]))
    sample.sort()
    if not sample:
        return _median_of_all(x, y)
    spread = 5 * math.sqrt(0.25 / len(sample))  # five standard errors of the rank
    lo = sample[max(0, int((0.5 - spread) * len(sample)))]
    hi = sample[min(len(sample) - 1, int((0.5 + spread) * len(sample)))]
    below = total = 0
    inside: list[float] = []
    for v in _slopes(x, y):
        total += 1
        if v < lo:
            below += 1
        elif v <= hi:
            inside.append(v)
    ranks = (total // 2,) if total % 2 else (total // 2 - 1, total // 2)
    if all(below <= r < below + len(inside) for r in ranks):
        inside.sort()
        return sum(inside[r - below] for r in ranks) / len(ranks)
    return _median_of_all(x, y)


def _median_of_all(x: Sequence[float], y: Sequence[float]) -> float | None:
    slopes = list(_slopes(x, y))
    return _median(slopes) if slopes else None


def least_squares_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Ordinary least-squares slope.

    >>> least_squares_slope([0, 1, 2, 3], [0, 0, 10, 10])
    4.0
    """
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def _median(values: list[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def mann_kendall(ys: Sequence[float]) -> tuple[float, float]:
    """Mann–Kendall trend test: (z, two-sided p). Ties corrected.

    >>> z, p = mann_kendall(list(range(30))); p < 0.001
    True
    """
    _, y = _thin(range(len(ys)), ys)
    n = len(y)
    if n < 3:
        return 0.0, 1.0
    s = 0
    for i in range(n - 1):
        yi = y[i]
        for j in range(i + 1, n):
            d = y[j] - yi
            s += (d > 0) - (d < 0)
    counts: dict[float, int] = {}
    for v in y:
        counts[v] = counts.get(v, 0) + 1
    ties = sum(t * (t - 1) * (2 * t + 5) for t in counts.values() if t > 1)
    var = (n * (n - 1) * (2 * n + 5) - ties) / 18
    if var <= 0:
        return 0.0, 1.0
    z = (s - 1) / math.sqrt(var) if s > 0 else (s + 1) / math.sqrt(var) if s < 0 else 0.0
    p = math.erfc(abs(z) / math.sqrt(2))
    return z, p


def leak_score(seconds_to_limit: float | None) -> float:
    """Impact points from the projected time to the limit.

    >>> leak_score(1800), leak_score(3600), round(leak_score(3600 * 24), 1), leak_score(None)
    (100.0, 100.0, 38.0, 0.0)
    """
    if seconds_to_limit is None or seconds_to_limit < 0:
        return 0.0
    hours = seconds_to_limit / 3600
    if hours <= 1:
        return 100.0
    week = 168.0
    return max(0.0, min(100.0, 100 * (1 - math.log(hours) / math.log(week))))


@dataclass(frozen=True)
class TrendTest:
    """A growth test of one series: robust slope, trend test, sub-window agreement."""

    status: str  # "growing" | "filling" | "flat" | "not_enough_data"
    slope: float  # units per x unit (per second, or per request)
    p_value: float
    sub_slopes: tuple[float, ...]
    points: int
    span: float  # x span
    growth: float  # fitted growth across the span
    reason: str = ""


def trend(
    xs: Sequence[float],
    ys: Sequence[float],
    *,
    min_growth: float,
    min_points: int = MIN_POINTS,
    min_span: float = 0.0,
    sub_slope: Callable[[Sequence[float], Sequence[float]], float] | None = None,
) -> TrendTest:
    """Is ``ys`` growing against ``xs`` (already past warm-up)?

    ``sub_slope`` estimates each sub-window's growth (default: Theil–Sen, robust to the
    outliers of a sampled RSS series)."""
    sub = sub_slope or (lambda x, y: theil_sen(x, y)[0])
    n = len(xs)
    span = (xs[-1] - xs[0]) if n else 0.0
    if n < min_points or span <= 0 or span < min_span:
        why = f"{n} points over {span:.0f}: need {min_points} over {min_span:.0f}"
        return TrendTest("not_enough_data", 0.0, 1.0, (), n, span, 0.0, why)
    slope, _ = theil_sen(xs, ys)
    _, p = mann_kendall(ys)
    growth = slope * span
    size = n // SUBWINDOWS
    subs = tuple(
        sub(xs[k * size : (k + 1) * size], ys[k * size : (k + 1) * size]) for k in range(SUBWINDOWS)
    )
    if p >= P_LEAK or slope <= 0 or growth < min_growth:
        return TrendTest("flat", slope, p, subs, n, span, growth, "no significant growth")
    if subs[0] > 0 and subs[-1] < PLATEAU_RATIO * subs[0]:
        return TrendTest("filling", slope, p, subs, n, span, growth,
                         "growth slowed to a plateau (a cache or pool filling up)")  # fmt: skip
    if any(s <= 0 for s in subs):
        return TrendTest("flat", slope, p, subs, n, span, growth, "not every sub-window grows")
    return TrendTest("growing", slope, p, subs, n, span, growth, "every sub-window grows")


@dataclass(frozen=True)
class LeakVerdict:
    """One process's verdict for one metric."""

    process: str
    metric: str  # "rss" | "uss" | "fds" | "threads"
    status: str  # "leak" | "filling" | "no_leak" | "not_enough_data"
    kind: str  # "memory_leak" | "fragmentation" | "fd_leak" | "thread_leak" | ""
    per_second: float
    per_1k_requests: float | None
    current: float
    limit: float | None
    seconds_to_limit: float | None
    test: TrendTest
    explanation: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "process": self.process,
            "metric": self.metric,
            "status": self.status,
            "kind": self.kind,
            "per_second": self.per_second,
            "per_1k_requests": self.per_1k_requests,
            "current": self.current,
            "limit": self.limit,
            "seconds_to_limit": self.seconds_to_limit,
            "p_value": self.test.p_value,
            "sub_slopes": list(self.test.sub_slopes),
            "points": self.test.points,
            "explanation": self.explanation,
            **self.extra,
        }


def _interp(t: float, series: Sequence[tuple[float, float]]) -> float:
    if t <= series[0][0]:
        return series[0][1]
    for (t0, v0), (t1, v1) in itertools.pairwise(series):
        if t0 <= t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return series[-1][1]


def leak_verdicts(
    samples: Sequence[ProcessSample],
    *,
    requests: Sequence[tuple[float, float]] | None = None,
    heap: Sequence[tuple[float, float]] | None = None,
    memory_limit: float | None = None,
    fd_limit: float | None = None,
    thread_limit: float | None = 10_000,
    warmup: float | None = None,
) -> list[LeakVerdict]:
    """Verdicts for memory, fds and threads of one process's series.

    ``requests``: (time, cumulative requests served) — when given (and moving), memory is
    fitted against requests. ``heap``: (time, heap bytes) e.g. from memray snapshots, to
    tell a heap leak from fragmentation. ``warmup``: seconds to skip (default: the first
    20 % of the series, at most 5 minutes).
    """
    if not samples:
        return []
    samples = sorted(samples, key=lambda s: s.t)
    label = samples[-1].label
    t0 = samples[0].t
    span = samples[-1].t - t0
    skip = warmup if warmup is not None else min(0.2 * span, 300.0)
    kept = [s for s in samples if s.t - t0 >= skip]
    times = [s.t for s in kept]
    reqs = None
    if requests and len(requests) >= 2 and requests[-1][1] > requests[0][1]:
        reqs = [_interp(t, requests) for t in times]
    out = []
    use_uss = all(s.uss is not None for s in kept) and bool(kept)
    mem_metric = "uss" if use_uss else "rss"
    mem = [float(s.uss if use_uss and s.uss is not None else s.rss) for s in kept]
    out.append(
        _verdict(label, mem_metric, times, mem, reqs, memory_limit,
                 min_growth=max(1 << 20, 0.02 * (mem[0] if mem else 0)), heap=heap)
    )  # fmt: skip
    fds = [s.fds for s in kept]
    if kept and all(v is not None for v in fds):
        out.append(
            _verdict(label, "fds", times, [float(v or 0) for v in fds], reqs, fd_limit,
                     min_growth=10)
        )  # fmt: skip
    out.append(
        _verdict(label, "threads", times, [float(s.threads) for s in kept], reqs, thread_limit,
                 min_growth=5)
    )  # fmt: skip
    return out


_KIND = {"rss": "memory_leak", "uss": "memory_leak", "fds": "fd_leak", "threads": "thread_leak"}
_UNIT = {"rss": "bytes", "uss": "bytes", "fds": "fds", "threads": "threads"}


def _fmt(metric: str, value: float) -> str:
    return format_bytes(value) if _UNIT[metric] == "bytes" else f"{value:.1f} {_UNIT[metric]}"


def _verdict(
    label: str,
    metric: str,
    times: list[float],
    values: list[float],
    reqs: list[float] | None,
    limit: float | None,
    *,
    min_growth: float,
    heap: Sequence[tuple[float, float]] | None = None,
) -> LeakVerdict:
    xs = reqs if reqs is not None else times
    test = trend(
        xs, values, min_growth=min_growth, min_span=0.0 if reqs is not None else MIN_SPAN_S
    )
    if test.status == "not_enough_data" and reqs is not None:
        test = trend(times, values, min_growth=min_growth, min_span=MIN_SPAN_S)
        xs = times
    current = values[-1] if values else 0.0
    span_t = times[-1] - times[0] if len(times) > 1 else 0.0
    per_s = per_1k = None
    if xs is reqs and reqs is not None and span_t > 0:
        rate = (reqs[-1] - reqs[0]) / span_t
        per_s = test.slope * rate
        per_1k = test.slope * 1000
    else:
        per_s = test.slope
    kind = _KIND[metric]
    extra: dict[str, Any] = {}
    if test.status == "not_enough_data":
        status, why = "not_enough_data", f"not enough data ({test.reason})"
    elif test.status == "filling":
        status, why = "filling", f"{metric} rose then levelled off: {test.reason}; not a leak"
    elif test.status == "flat":
        status, why = "no_leak", f"{metric}: {test.reason} (p={test.p_value:.3g})"
    else:
        status = "leak"
        why = (
            f"{metric} grows {_fmt(metric, per_s)}/s"
            + (f" ({_fmt(metric, per_1k or 0)} per 1k requests)" if per_1k is not None else "")
            + f", Mann-Kendall p={test.p_value:.2g}, all {SUBWINDOWS} sub-windows grow"
        )
        if kind == "memory_leak" and heap and len(heap) >= MIN_POINTS // 2:
            h_slope, _ = theil_sen([h[0] for h in heap], [h[1] for h in heap])
            extra["heap_per_second"] = h_slope
            if per_s > 0 and h_slope < 0.2 * per_s:
                kind = "fragmentation"
                why += "; the Python heap stays flat: allocator fragmentation, not live objects"
            else:
                why += "; the heap grows as fast: live objects are kept (heap leak)"
    seconds_to_limit = None
    if status == "leak" and limit is not None and per_s > 0:
        seconds_to_limit = max(0.0, (limit - current) / per_s)
    return LeakVerdict(
        label, metric, status, kind if status == "leak" else "", per_s, per_1k, current, limit,
        seconds_to_limit, test, why, extra,
    )  # fmt: skip


def verdict_findings(verdicts: Sequence[LeakVerdict]) -> list[Finding]:
    out = []
    for v in verdicts:
        if v.status != "leak":
            continue
        score = leak_score(v.seconds_to_limit)
        if v.seconds_to_limit is not None:
            when = (
                f"reaches its limit ({_fmt(v.metric, v.limit or 0)}) in about "
                f"{format_duration(v.seconds_to_limit)}"
            )
        else:
            when = "no limit known, so no projection"
        rec = {
            "memory_leak": "Attach a memray window (profile --memray) to find the allocation "
            "site whose live bytes grow; bound or evict the container that keeps them.",
            "fragmentation": "Live objects do not grow: try PYTHONMALLOC / jemalloc "
            "(LD_PRELOAD), fewer long-lived large buffers, or recycle workers.",
            "fd_leak": "Close files/sockets/clients (use `with`), reuse one HTTP client.",
            "thread_leak": "Reuse a bounded thread pool; join or stop threads you start.",
        }[v.kind]
        out.append(
            Finding(
                kind=v.kind,
                title=(
                    f"{v.metric} of {v.process} grows steadily ({_fmt(v.metric, v.per_second)}/s)"
                ),
                score=round(score, 1),
                score_explanation=(
                    f"At the fitted rate it {when}; leak impact is 100 at 1 h or less, "
                    "0 at a week or more (log scale)."
                ),
                recommendation=rec,
                location=Location(process=v.process),
                evidence=v.to_json(),
                source="process",
            )
        )
    return out


# --- memray attribution -------------------------------------------------------------


@dataclass(frozen=True)
class Suspect:
    """Live bytes attributed to one application location during a memray window."""

    location: str  # "func (file:line)"
    status: str  # "leak" | "filling" | "flat"
    slope: float  # bytes per second (Theil–Sen)
    growth: float  # live bytes at the end minus at the start
    final_bytes: int
    allocations: int
    sub_slopes: tuple[float, ...]
    p_value: float
    stacks: int

    def to_json(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "status": self.status,
            "bytes_per_second": round(self.slope, 1),
            "growth_bytes": int(self.growth),
            "final_live_bytes": self.final_bytes,
            "allocations": self.allocations,
            "sub_slopes": [round(s, 1) for s in self.sub_slopes],
            "p_value": self.p_value,
            "stacks": self.stacks,
        }


def _app_location(stack: Sequence[tuple[str, str, int]]) -> str:
    """The deepest application frame of a leaf-first stack (else the leaf)."""
    for frame in stack:
        if frame[1] and frame_info(frame[1]).origin == "app":
            return frame_label(frame)
    return frame_label(stack[0]) if stack else "<unknown>"


def retained_floor(ys: Sequence[float]) -> list[float]:
    """The bytes that stay live from each moment to the end of the window (the running
    minimum from the right): a leak raises this floor, transient buffers that come and
    go with requests do not, and a cache raises it only while it fills.

    >>> retained_floor([0, 5, 1, 6, 2, 2])
    [0, 1, 1, 2, 2, 2]
    """
    out = list(ys)
    for i in range(len(out) - 2, -1, -1):
        out[i] = min(out[i], out[i + 1])
    return out


def memray_suspects(capture: MemrayCapture, min_growth: int = 256 << 10) -> list[Suspect]:
    """Application locations ranked by growth of their live bytes (leaks first).

    The trend test runs on each location's retained floor, with least-squares slopes per
    sub-window: one location's floor moves in steps (one per retained allocation), and
    the median pairwise slope of a stretch holding only a few steps is 0, which made a
    steady leak of a few large objects look like "not every sub-window grows"."""
    n = len(capture.times)
    if n < 6:
        return []
    grouped: dict[str, list[int]] = {}
    allocs: dict[str, int] = {}
    nstacks: dict[str, int] = {}
    for loc in capture.locations:
        key = _app_location(loc.stack)
        acc = grouped.setdefault(key, [0] * n)
        for i, v in enumerate(loc.live_bytes):
            acc[i] += v
        allocs[key] = allocs.get(key, 0) + loc.allocations
        nstacks[key] = nstacks.get(key, 0) + 1
    # ~10 ms snapshots: 120 evenly spaced ones are plenty for a slope and keep it fast.
    idx = sorted({round(i * (n - 1) / 119) for i in range(120)}) if n > 120 else list(range(n))
    times = [capture.times[i] for i in idx]
    out = []
    for key, full in grouped.items():
        series = [full[i] for i in idx]
        ys = [float(v) for v in series]
        if max(series) < min_growth:  # too small to matter: skip the O(n^2) tests
            out.append(Suspect(key, "flat", 0.0, ys[-1] - ys[0], series[-1], allocs[key],
                               (), 1.0, nstacks[key]))  # fmt: skip
            continue
        test = trend(
            times, retained_floor(ys), min_growth=min_growth, min_points=6,
            sub_slope=least_squares_slope,
        )  # fmt: skip
        status = {"growing": "leak", "filling": "filling"}.get(test.status, "flat")
        out.append(
            Suspect(key, status, test.slope, ys[-1] - ys[0], series[-1], allocs[key],
                    test.sub_slopes, test.p_value, nstacks[key])
        )  # fmt: skip
    order = {"leak": 0, "filling": 1, "flat": 2}
    out.sort(key=lambda s: (order[s.status], -s.slope))
    return out


def suspect_findings(
    suspects: Sequence[Suspect],
    process: str,
    *,
    current_rss: float,
    memory_limit: float | None,
    limit: int = 5,
) -> list[Finding]:
    out: list[Finding] = []
    for s in suspects:
        if s.status != "leak" or len(out) >= limit:
            continue
        to_limit = (
            max(0.0, (memory_limit - current_rss) / s.slope)
            if memory_limit is not None and s.slope > 0
            else None
        )
        score = leak_score(to_limit)
        when = (
            f"at this rate alone {process} reaches {format_bytes(memory_limit or 0)} in "
            f"about {format_duration(to_limit)}"
            if to_limit is not None
            else "no memory limit known, so no projection"
        )
        out.append(
            Finding(
                kind="memory_leak",
                title=f"live memory allocated at {s.location.split(' (')[0]} grows "
                f"{format_bytes(s.slope)}/s in {process}",
                score=round(score, 1),
                score_explanation=(
                    f"{when}; leak impact is 100 at 1 h or less, 0 at a week or more (log scale)."
                ),
                recommendation=(
                    "Objects allocated here stay alive: bound the container that keeps "
                    "them (LRU/TTL), or drop references when the request/session ends."
                ),
                location=Location(code=s.location, process=process),
                evidence=s.to_json(),
                source="memray",
            )
        )
    return out


def scalene_leak_findings(
    profile: ScaleneProfile,
    process: str,
    *,
    memory_limit: float | None,
    min_likelihood: float = 0.9,
) -> list[Finding]:
    """scalene's leak candidates (likelihood ≥ 0.9), scored by time to the limit."""
    out: list[Finding] = []
    for leak in profile.leaks:
        if leak.likelihood < min_likelihood or leak.velocity_mb_s <= 0:
            continue
        rate = leak.velocity_mb_s * (1 << 20)
        current = profile.max_footprint_mb * (1 << 20)
        to_limit = max(0.0, (memory_limit - current) / rate) if memory_limit else None
        where = f"{frame_info(leak.file).short}:{leak.lineno}"
        out.append(
            Finding(
                kind="memory_leak",
                title=f"scalene: likely leak at {where} ({format_bytes(rate)}/s)",
                score=round(leak_score(to_limit), 1),
                score_explanation=(
                    f"scalene rates the leak likelihood {leak.likelihood:.2f} at "
                    f"{leak.velocity_mb_s:.2f} MB/s; "
                    + (
                        f"at that rate the limit is reached in about {format_duration(to_limit)}"
                        if to_limit is not None
                        else "no memory limit known, so no projection"
                    )
                    + "; 100 at 1 h or less, 0 at a week or more."
                ),
                recommendation="Bound or release what this line allocates.",
                location=Location(code=f"{leak.text[:60]} ({where})", process=process),
                evidence={"likelihood": leak.likelihood, "velocity_mb_s": leak.velocity_mb_s},
                source="scalene",
            )
        )
    return out


def memory_limit_for(pid: int | None = None) -> float | None:
    """The memory limit a process runs under: its cgroup's ``memory.max``, else host RAM."""
    import psutil

    paths = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
    if pid is not None:
        try:
            with open(f"/proc/{pid}/cgroup") as fh:
                for line in fh:
                    rel = line.strip().split(":", 2)[-1]
                    if rel and rel != "/":
                        paths.insert(0, f"/sys/fs/cgroup{rel}/memory.max")
        except OSError:
            pass
    total = float(psutil.virtual_memory().total)
    for path in paths:
        try:
            with open(path) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            return float(text)
    return total
