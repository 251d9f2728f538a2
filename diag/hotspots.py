"""CPU hotspots and the wall-time breakdown from py-spy's collapsed stacks.

Pure functions over ``probes.pyspy.CollapsedStacks``:

- ``fold``: framework plumbing (asyncio, uvicorn, starlette, anyio, fastapi,
  concurrent.futures, threading, ...) and the frames of comprehensions run inline by
  their own function are removed from each stack, and a sample's *self*
  time lands on its deepest application frame (a call into ``json`` or ``re`` made by
  the app counts for the app function that made it; the callee is kept as evidence).
- ``function_stats``: per function self and total sample shares with a 95 % Wilson
  interval (samples are treated as independent draws: the interval is a floor on the
  real uncertainty, not a guarantee).
- ``wall_breakdown``: where each thread's wall time went (on CPU, database client, HTTP
  or LLM client, locks and sleeps, idle), from an ``--idle`` recording, refined with a
  concurrent CPU recording when there is one.
- ``hotspot_findings``: score = the share (%) of the process's sampled CPU time spent in
  the function's own code: what making it free would recover.
- ``to_speedscope`` / ``to_collapsed``: exports.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from diag.findings import Finding, Location
from probes.pyspy import CollapsedStacks, Frame, Stack
from probes.scalene import ScaleneProfile

# Packages whose frames are plumbing: removed when folding, never blamed for self time.
FRAMEWORK = frozenset(
    {
        "asyncio", "concurrent", "threading", "selectors", "uvicorn", "starlette", "anyio",
        "fastapi", "h11", "httptools", "uvloop", "click", "watchfiles", "multiprocessing",
        "runpy", "gunicorn", "sniffio", "contextlib", "socketserver", "importlib", "<frozen",
        "contextvars", "functools", "queue", "_weakrefset", "exceptiongroup", "websockets",
        "wsproto", "mcp", "sse_starlette",
    }
)  # fmt: skip
DB_CLIENTS = frozenset(
    {"psycopg", "psycopg2", "psycopg_pool", "asyncpg", "sqlalchemy", "postgrest", "supabase"}
)
HTTP_CLIENTS = frozenset(
    {
        "httpx", "httpcore", "aiohttp", "openai", "anthropic", "requests", "urllib3",
        "http", "pydantic_ai", "ollama",
    }
)  # fmt: skip
# Leaf functions that wait rather than compute (py-spy's own idle heuristic, widened).
_WAITING = frozenset(
    {
        "wait", "acquire", "get", "sleep", "select", "poll", "epoll", "accept", "recv",
        "recv_into", "readinto", "join", "_wait_for_tstate_lock", "wait_for", "result",
        "_worker", "serve_forever", "run_forever", "_run_once", "read", "readline",
    }
)  # fmt: skip
_IDLE_MODULES = frozenset({"selectors", "asyncio", "threading", "queue", "concurrent", "socket"})

_SITE = re.compile(r".*/(?:site|dist)-packages/")
_STDLIB = re.compile(r".*/lib/python\d+(?:\.\d+)?/")
CATEGORIES = ("on_cpu", "db", "http", "lock_sleep", "idle")


@dataclass(frozen=True)
class FrameInfo:
    module: str  # top-level package or module ("asyncio", "psycopg", "app")
    origin: str  # "app" | "stdlib" | "package"
    short: str  # display path


_frame_cache: dict[str, FrameInfo] = {}


def frame_info(path: str) -> FrameInfo:
    """Classify a frame's file (full path as recorded with --full-filenames)."""
    cached = _frame_cache.get(path)
    if cached is not None:
        return cached
    if path.startswith("<frozen"):
        name = path.removeprefix("<frozen ").rstrip(">").split(".")[0]
        info = FrameInfo(name, "stdlib", path)
    elif m := _SITE.match(path):
        rest = path[m.end() :]
        info = FrameInfo(_top(rest), "package", rest)
    elif m := _STDLIB.match(path):
        rest = path[m.end() :]
        info = FrameInfo(_top(rest), "stdlib", rest)
    elif "/" not in path and path.endswith(".py") and path[:-3] in _STDLIB_NAMES:
        info = FrameInfo(path[:-3], "stdlib", path)  # shortened names from older recordings
    else:
        info = FrameInfo("app", "app", _short_app(path))
    if len(_frame_cache) < 100_000:
        _frame_cache[path] = info
    return info


_STDLIB_NAMES = frozenset(
    {"threading", "selectors", "queue", "socket", "ssl", "runpy", "contextlib", "functools"}
)


def _top(rest: str) -> str:
    first = rest.split("/", 1)[0]
    return first[:-3] if first.endswith(".py") else first


def _short_app(path: str) -> str:
    cwd = os.getcwd()
    if path.startswith(cwd + "/"):
        return path[len(cwd) + 1 :]
    return path


def is_plumbing(frame: Frame) -> bool:
    info = frame_info(frame[1])
    return info.origin != "app" and info.module in FRAMEWORK


def frame_label(frame: Frame, line: bool = True) -> str:
    func, path, lineno = frame
    short = frame_info(path).short if path else ""
    if not short:
        return func
    return f"{func} ({short}:{lineno})" if line and lineno else f"{func} ({short})"


@dataclass(frozen=True)
class FoldedSample:
    self_frame: Frame  # where self time lands
    callee: Frame | None  # the non-app leaf the self frame was calling, if any
    functions: tuple[tuple[str, str], ...]  # distinct (func, file) on the folded stack


_COMPREHENSION = (".<genexpr>", ".<listcomp>", ".<dictcomp>", ".<setcomp>")


def _inline_comprehension(frame: Frame, caller: Frame | None) -> bool:
    """A comprehension's frame run by the function it is written in (``f.<locals>.<genexpr>``
    under ``f``): its code is that function's code, as on Python 3.12+, where list, dict
    and set comprehensions have no frame of their own."""
    func = frame[0]
    return (
        caller is not None
        and caller[1] == frame[1]
        and func.endswith(_COMPREHENSION)
        and func.rsplit(".<locals>.", 1)[0] == caller[0]
    )


def fold_stack(stack: Stack) -> FoldedSample | None:
    """Drop plumbing and inline comprehensions; self time goes to the deepest application
    frame."""
    kept: list[Frame] = []
    inline = False  # the leaf is an inline comprehension: its time is the function's own
    for f in stack:
        if not kept and f[0].endswith(_COMPREHENSION) and ".<locals>." in f[0]:
            # the root of a torn stack (a non-blocking sample lost the frames above it):
            # a comprehension's code is the function it is written in
            f = (f[0].rsplit(".<locals>.", 1)[0], f[1], f[2])
        inline = _inline_comprehension(f, kept[-1] if kept else None)
        if f[1] and not is_plumbing(f) and not inline:
            kept.append(f)
    if not kept:
        return None  # pure plumbing (event loop, pool worker): no function to blame
    app_idx = next(
        (i for i in range(len(kept) - 1, -1, -1) if frame_info(kept[i][1]).origin == "app"),
        None,
    )
    self_frame = kept[-1] if app_idx is None else kept[app_idx]
    # what the self frame was calling (library code, or plumbing that was folded away)
    callee = stack[-1] if stack[-1] != self_frame and not inline else None
    seen: dict[tuple[str, str], None] = {}
    for f in kept:
        seen.setdefault((f[0], f[1]), None)
    return FoldedSample(self_frame, callee, tuple(seen))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval for a proportion k/n, as fractions.

    >>> lo, hi = wilson(50, 100); round(lo, 3), round(hi, 3)
    (0.404, 0.596)
    """
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class FunctionStat:
    func: str
    file: str
    line: int  # the most-sampled line
    self_samples: int
    total_samples: int
    n: int  # all samples of the profile (the denominator)
    self_ci: tuple[float, float]  # fractions
    callees: tuple[tuple[str, int], ...] = ()  # non-app callees that self time went to

    @property
    def self_share(self) -> float:
        return self.self_samples / self.n if self.n else 0.0

    @property
    def total_share(self) -> float:
        return self.total_samples / self.n if self.n else 0.0

    @property
    def label(self) -> str:
        return frame_label((self.func, self.file, self.line))

    def to_json(self) -> dict[str, Any]:
        return {
            "function": self.label,
            "self_samples": self.self_samples,
            "total_samples": self.total_samples,
            "self_pct": round(100 * self.self_share, 2),
            "self_pct_ci95": [round(100 * x, 2) for x in self.self_ci],
            "total_pct": round(100 * self.total_share, 2),
            "callees": [{"frame": c, "samples": k} for c, k in self.callees],
        }


@dataclass(frozen=True)
class Profile:
    """A folded CPU profile of one process."""

    stats: tuple[FunctionStat, ...]  # by self samples, highest first
    samples: int  # active samples kept
    plumbing_samples: int  # samples that were plumbing only
    seconds: float = 0.0
    rate: int = 100


def function_stats(stacks: CollapsedStacks, seconds: float = 0.0, rate: int = 100) -> Profile:
    """Fold and aggregate per function (func, file)."""
    self_n: dict[tuple[str, str], int] = {}
    total_n: dict[tuple[str, str], int] = {}
    lines: dict[tuple[str, str], dict[int, int]] = {}
    callees: dict[tuple[str, str], dict[str, int]] = {}
    plumbing = 0
    n = 0
    for stack, count in stacks.stacks.items():
        if stack and (_is_waiting(stack[-1]) or _idle_leaf(stack[-1])):
            continue  # an event loop or pool thread waiting: py-spy may call it active
        n += count
        folded = fold_stack(stack)
        if folded is None:
            plumbing += count
            continue
        func, path, lineno = folded.self_frame
        key = (func, path)
        self_n[key] = self_n.get(key, 0) + count
        per_line = lines.setdefault(key, {})
        per_line[lineno] = per_line.get(lineno, 0) + count
        if folded.callee is not None:
            c = callees.setdefault(key, {})
            label = frame_label(folded.callee, line=False)
            c[label] = c.get(label, 0) + count
        for fkey in folded.functions:
            total_n[fkey] = total_n.get(fkey, 0) + count
    stats = []
    for key, total in total_n.items():
        s = self_n.get(key, 0)
        per_line = lines.get(key, {})
        line = max(per_line, key=lambda ln: per_line[ln]) if per_line else 0
        top_callees = sorted(callees.get(key, {}).items(), key=lambda kv: -kv[1])[:3]
        stats.append(
            FunctionStat(key[0], key[1], line, s, total, n, wilson(s, n), tuple(top_callees))
        )
    stats.sort(key=lambda st: (-st.self_samples, -st.total_samples, st.func))
    return Profile(tuple(stats), n, plumbing, seconds, rate)


def _idle_leaf(frame: Frame) -> bool:
    """A selector/epoll/queue wait at the leaf: idle, whatever py-spy's heuristic said."""
    info = frame_info(frame[1])
    return (
        info.origin != "app"
        and info.module in _IDLE_MODULES
        and frame[0].endswith(("select", "poll", "wait", "get", "_wait_for_tstate_lock", "accept"))
    )


def merge(stacks: Iterable[CollapsedStacks]) -> CollapsedStacks:
    out: dict[Stack, int] = {}
    bad = 0
    for cs in stacks:
        bad += cs.bad_lines
        for stack, count in cs.stacks.items():
            out[stack] = out.get(stack, 0) + count
    return CollapsedStacks(out, bad)


# --- wall-time breakdown ------------------------------------------------------------


def _is_waiting(frame: Frame) -> bool:
    info = frame_info(frame[1])
    return info.origin != "app" and frame[0] in _WAITING


def classify_stack(stack: Stack) -> str:
    """One of CATEGORIES for a wall-clock sample (before CPU refinement)."""
    modules = [frame_info(f[1]) for f in stack if f[1]]
    if any(m.origin != "app" and m.module in DB_CLIENTS for m in modules):
        return "db"
    if any(m.origin != "app" and m.module in HTTP_CLIENTS for m in modules):
        return "http"
    has_app = any(m.origin == "app" for m in modules)
    leaf = stack[-1] if stack else ("", "", 0)
    if not has_app:
        waiting = _is_waiting(leaf) or (modules and modules[-1].module in _IDLE_MODULES)
        return "idle" if waiting else "on_cpu"
    if _is_waiting(leaf):
        return "lock_sleep"
    return "on_cpu"


@dataclass(frozen=True)
class WallBreakdown:
    """Thread-time shares of one process (fractions summing to 1 when samples > 0)."""

    shares: Mapping[str, float]
    samples: int
    refined: bool  # on-CPU split by a concurrent CPU recording
    top: Mapping[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)

    def busy_shares(self) -> dict[str, float]:
        """Shares of the non-idle time."""
        busy = 1.0 - self.shares.get("idle", 0.0)
        if busy <= 0:
            return {c: 0.0 for c in CATEGORIES if c != "idle"}
        return {c: self.shares.get(c, 0.0) / busy for c in CATEGORIES if c != "idle"}

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "refined_with_cpu_recording": self.refined,
            "shares_pct": {c: round(100 * self.shares.get(c, 0.0), 2) for c in CATEGORIES},
            "busy_shares_pct": {c: round(100 * v, 2) for c, v in self.busy_shares().items()},
            "top": {
                c: [{"frame": f, "pct": round(100 * p, 2)} for f, p in v]
                for c, v in self.top.items()
            },
        }


def _blame(stack: Stack) -> str:
    folded = fold_stack(stack)
    if folded is None:
        return frame_label(stack[-1], line=False) if stack else "?"
    return frame_label(folded.self_frame)


def wall_breakdown(
    wall: CollapsedStacks,
    cpu: CollapsedStacks | None = None,
    wall_seconds: float = 1.0,
    cpu_seconds: float = 1.0,
) -> WallBreakdown:
    """Where the thread time went. With ``cpu`` (recorded over the same period at the same
    rate) a stack the frames call "on CPU" is split by how often py-spy saw it active:
    the rest is a sleep or a blocking call py-spy cannot see (``time.sleep``, a C call).
    """
    totals = dict.fromkeys(CATEGORIES, 0.0)
    blame: dict[str, dict[str, float]] = {c: {} for c in CATEGORIES}
    scale = (wall_seconds / cpu_seconds) if cpu is not None and cpu_seconds > 0 else 1.0
    n = wall.total
    for stack, count in wall.stacks.items():
        cat = classify_stack(stack)
        parts: list[tuple[str, float]] = [(cat, float(count))]
        if cat == "on_cpu" and cpu is not None:
            active = cpu.stacks.get(stack, 0) * scale
            frac = min(1.0, active / count) if count else 0.0
            parts = [("on_cpu", count * frac), ("lock_sleep", count * (1 - frac))]
        for c, amount in parts:
            if amount <= 0:
                continue
            totals[c] += amount
            where = _blame(stack)
            blame[c][where] = blame[c].get(where, 0.0) + amount
    shares = {c: (v / n if n else 0.0) for c, v in totals.items()}
    top = {
        c: tuple((w, a / n) for w, a in sorted(b.items(), key=lambda kv: -kv[1])[:3])
        for c, b in blame.items()
        if b and n
    }
    return WallBreakdown(shares, n, cpu is not None, top)


# --- findings -----------------------------------------------------------------------


def hotspot_findings(
    profile: Profile,
    process: str,
    *,
    min_share: float = 0.02,
    min_samples: int = 5,
    min_busy: float = 0.05,
    limit: int = 10,
) -> list[Finding]:
    """CPU hotspots of one process: score = % of its sampled CPU time in the function's
    own code (after folding), i.e. what making the function free would recover.

    A process that was on CPU less than ``min_busy`` of the time (active samples over
    seconds x rate) gets no hotspot findings: shares of almost nothing are noise.
    """
    out: list[Finding] = []
    if profile.samples <= 0:
        return out
    if profile.seconds > 0 and profile.samples < min_busy * profile.seconds * profile.rate:
        return out
    # how busy the process was (active samples per possible sample, one core's worth):
    # a share of a mostly idle process's CPU recovers little of its requests' time
    busy = (
        min(1.0, profile.samples / (profile.seconds * profile.rate))
        if profile.seconds > 0 and profile.rate
        else 1.0
    )
    for st in profile.stats:
        if len(out) >= limit:
            break
        if st.self_samples < min_samples or st.self_share < min_share:
            continue
        pct = 100 * st.self_share
        lo, hi = (100 * x for x in st.self_ci)
        via = f" (mostly in {st.callees[0][0]})" if st.callees else ""
        cpu_s = st.self_samples / profile.rate if profile.rate else 0.0
        out.append(
            Finding(
                kind="cpu_hotspot",
                title=f"{st.func} uses {pct:.0f}% of sampled CPU in {process}{via}",
                score=round(pct * busy, 2),
                score_explanation=(
                    f"{st.self_samples} of {profile.samples} CPU samples of {process} "
                    f"({pct:.1f}%, 95% CI {lo:.1f}-{hi:.1f}%) were in this function's own "
                    f"code after folding framework frames, and the process was on CPU "
                    f"{busy:.0%} of the time: making it free would recover about "
                    f"{pct * busy:.1f}% of its time."
                ),
                recommendation=(
                    "Look at the hottest line first; cache or precompute repeated work, "
                    "move it out of the request path, or use a faster algorithm"
                    + (f"; most of it is the call into {st.callees[0][0]}" if via else "")
                    + "."
                ),
                location=Location(code=st.label, process=process),
                evidence={
                    **st.to_json(),
                    "cpu_seconds": round(cpu_s, 3),
                    "profile_seconds": round(profile.seconds, 2),
                    "rate_hz": profile.rate,
                },
                source="pyspy",
            )
        )
    return out


# --- exports ------------------------------------------------------------------------


def to_collapsed(stacks: CollapsedStacks, short: bool = True) -> str:
    """Collapsed text (flamegraph.pl / speedscope input), root first."""
    lines = []
    for stack, count in sorted(stacks.stacks.items(), key=lambda kv: -kv[1]):
        frames = ";".join(frame_label(f) if short else f"{f[0]} ({f[1]}:{f[2]})" for f in stack)
        lines.append(f"{frames} {count}")
    return "\n".join(lines) + ("\n" if lines else "")


def to_speedscope(stacks: CollapsedStacks, name: str, rate: int = 100) -> dict[str, Any]:
    """A speedscope "sampled" profile (one per process; weights in seconds)."""
    frames: list[dict[str, Any]] = []
    index: dict[Frame, int] = {}
    samples: list[list[int]] = []
    weights: list[float] = []
    for stack, count in stacks.stacks.items():
        ids = []
        for f in stack:
            i = index.get(f)
            if i is None:
                i = index[f] = len(frames)
                frames.append({"name": f[0], "file": frame_info(f[1]).short, "line": f[2]})
            ids.append(i)
        samples.append(ids)
        weights.append(count / rate)
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": frames},
        "profiles": [
            {
                "type": "sampled",
                "name": name,
                "unit": "seconds",
                "startValue": 0.0,
                "endValue": sum(weights),
                "samples": samples,
                "weights": weights,
            }
        ],
        "name": name,
        "exporter": "archon-diag",
    }


# --- scalene ------------------------------------------------------------------------

_WAIT_TEXT = re.compile(r"\b(sleep|wait|select|join|accept|recv|acquire|get)\s*\(")


def scalene_findings(profile: ScaleneProfile, process: str, limit: int = 10) -> list[Finding]:
    """Line-level CPU and copy findings from a scalene profile.

    Score = the line's share (%) of the program's run time (Python + native), as scalene
    measured it. scalene counts time inside a blocking C call (``time.sleep``) as native
    time, so lines that only wait (no Python time, a sleep/wait call) are left out.
    """
    out: list[Finding] = []
    rows = sorted(profile.lines, key=lambda r: -(r.cpu_python + r.cpu_c))
    for row in rows:
        if len(out) >= limit:
            break
        share = row.cpu_python + row.cpu_c
        if share < 2.0:
            break
        if row.cpu_python == 0 and _WAIT_TEXT.search(row.text):
            continue
        where = f"{frame_info(row.file).short}:{row.lineno}"
        copy = f"; copies {row.copy_mb_s:.0f} MB/s" if row.copy_mb_s >= 50 else ""
        out.append(
            Finding(
                kind="cpu_hotspot",
                title=f"line {where} takes {share:.0f}% of run time in {process}{copy}",
                score=round(share, 2),
                score_explanation=(
                    f"scalene measured {row.cpu_python:.1f}% Python + {row.cpu_c:.1f}% native "
                    f"time on this line over {profile.elapsed:.1f} s; making it free would "
                    "recover about that share of the program's time."
                ),
                recommendation=(
                    "Avoid the copies (views, in-place operations, fewer conversions)."
                    if copy
                    else "Optimise this line: cache, vectorise or move it off the hot path."
                ),
                location=Location(code=f"{row.text[:60]} ({where})", process=process),
                evidence={
                    "cpu_python_pct": row.cpu_python,
                    "cpu_native_pct": row.cpu_c,
                    "sys_pct": row.cpu_sys,
                    "malloc_mb": row.malloc_mb,
                    "peak_mb": row.peak_mb,
                    "copy_mb_s": row.copy_mb_s,
                },
                source="scalene",
            )
        )
    return out
