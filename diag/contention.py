"""Cross-layer findings and evidence that no single probe can produce alone.

- ``event_loop_findings``: wall-clock stacks of the event-loop thread caught inside a
  *synchronous* database/HTTP client call or a sleep: every request on that process
  waits meanwhile. Score = the share (%) of the loop thread's wall time spent blocked.
- ``pool_findings``: from active-session history, an application whose pooled database
  sessions (the ones that live through the whole window) are all *in use* at once most of
  the time while more requests are in flight than it has connections: requests queue for
  a connection. "In use" counts a session that is running a statement or in a
  transaction, and also one idle for less than ``HELD_IDLE_S``: an application holding a
  connection between the statements of one request (processing rows, awaiting its event
  loop) shows as ``idle``/``ClientRead`` on the server side, so the database's own
  ``active`` count hides a starved pool of a chatty client. Spare pooled connections sit
  idle for much longer (seconds).

Which Python call site issued a statement is ``diag.callsites``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from diag.findings import Finding, Location
from diag.hotspots import classify_stack, fold_stack, frame_info, frame_label
from probes.targets import Target

_LOOP = ("_run_once", "base_events.py")
HELD_IDLE_S = 0.1  # idle for less than this: still held by the app (or handed straight on)
_SYNC_DB = ("psycopg/cursor.py", "psycopg/connection.py", "psycopg2/", "pg8000/", "sqlite3")
_SYNC_HTTP = ("requests/", "urllib3/", "http/client.py")
_BUSY_STATES = ("active", "idle in transaction", "idle in transaction (aborted)")


def _on_loop(stack: Sequence[tuple[str, str, int]]) -> bool:
    """The asyncio event-loop thread: py-spy names the method ``BaseEventLoop._run_once``
    (qualified, 3.11+) or ``_run_once`` (older Pythons)."""
    return any(f[0].rsplit(".", 1)[-1] == _LOOP[0] and f[1].endswith(_LOOP[1]) for f in stack)


def _blocking(stack: Sequence[tuple[str, str, int]]) -> bool:
    files = [f[1] for f in stack]
    if any("_async" in p for p in files if "psycopg" in p):
        return False  # an async client running briefly on the loop, not blocking it
    cat = classify_stack(tuple(stack))
    if cat == "db":
        return any(any(s in p for s in _SYNC_DB) for p in files)
    if cat == "http":
        return any(any(s in p for s in _SYNC_HTTP) for p in files)
    if cat == "lock_sleep":
        leaf = stack[-1]
        return leaf[0] == "sleep" and frame_info(leaf[1]).origin != "package"
    return False


def event_loop_findings(windows: Iterable[Any], min_share: float = 0.005) -> list[Finding]:
    """From ``--idle`` (wall) py-spy windows: time the event loop spent blocked.

    ``min_share`` is low on purpose: every blocked call stalls *every* request in flight
    on that loop for its whole duration, so even 0.5 % of the loop's wall time (5 ms a
    second) shows in tail latency; the score stays the blocked share."""
    loop: Counter[str] = Counter()
    blocked: Counter[str] = Counter()
    blame: dict[str, Counter[str]] = defaultdict(Counter)
    for w in windows:
        if w.stacks is None:
            continue
        for stack, count in w.stacks.stacks.items():
            if not _on_loop(stack):
                continue
            loop[w.label] += count
            if _blocking(stack):
                blocked[w.label] += count
                folded = fold_stack(stack)
                where = frame_label(folded.self_frame) if folded else frame_label(stack[-1])
                blame[w.label][where] += count
    out = []
    for label, n_blocked in blocked.items():
        share = n_blocked / loop[label] if loop[label] else 0.0
        if share < min_share:
            continue
        where, hits = blame[label].most_common(1)[0]
        out.append(
            Finding(
                kind="event_loop_blocking",
                title=f"synchronous call blocks the event loop: {where.split(' (')[0]}",
                score=round(100 * share, 2),
                score_explanation=(
                    f"the event loop of {label} was blocked in a synchronous call "
                    f"{share:.1%} of its wall time; every request on it waits meanwhile"
                ),
                recommendation=(
                    "use the async client (psycopg AsyncConnection / httpx.AsyncClient) or "
                    "move the call off the loop with asyncio.to_thread / run_in_executor"
                ),
                location=Location(code=where, process=label),
                evidence={
                    "loop_samples": loop[label],
                    "blocked_samples": n_blocked,
                    "blocked_at": blame[label].most_common(3),
                    "top_site_samples": hits,
                },
                source="pyspy",
            )
        )
    return out


def _owner(session: Any, ports: Mapping[int, str]) -> str:
    if session.client_port is not None and session.client_port in ports:
        return ports[session.client_port]
    return session.application_name or (session.client_addr or "local")


def _in_use(session: Any, held_idle_s: float) -> bool:
    if session.state in _BUSY_STATES:
        return True
    age = session.state_age_s
    return session.state == "idle" and age is not None and age < held_idle_s


def requests_in_flight(load: Mapping[str, Any] | None) -> float | None:
    """Little's law over the load's totals: throughput x mean latency (None: no load)."""
    totals = (load or {}).get("totals") or {}
    rps, avg_ms = totals.get("rps"), totals.get("avg_ms")
    if not rps or not avg_ms:
        return None
    return float(rps) * float(avg_ms) / 1000.0


def pool_findings(
    samples: Sequence[Any],
    targets: Sequence[Target],
    load: Mapping[str, Any] | None,
    min_saturated: float = 0.3,
    held_idle_s: float = HELD_IDLE_S,
    min_overload: float = 1.0,
) -> list[Finding]:
    """Applications whose pooled sessions were all in use at once in most samples.

    Pooled sessions: an application's backends present in >= 80 % of the samples (a
    connection opened per request is not part of the pool). When the load is known, the
    requests in flight (Little's law) must exceed ``min_overload`` x the pool size: with
    no more requests than connections nothing can queue for one; past that, the score
    grows with the share of request time spent waiting.
    """
    if len(samples) < 20:
        return []
    seen: dict[str, Counter[int]] = defaultdict(Counter)
    for sample in samples:
        for s in sample.sessions:
            app = s.application_name or ""
            if app.startswith("archon-diag") or s.state is None:
                continue
            seen[app or (s.client_addr or "local")][s.pid] += 1
    in_flight = requests_in_flight(load)
    out = []
    for owner, pids in seen.items():
        pool = {pid for pid, n in pids.items() if n >= 0.8 * len(samples)}
        if not pool:
            continue
        size = len(pool)
        if in_flight is not None and in_flight <= min_overload * size:
            continue
        saturated = 0
        queries: Counter[int] = Counter()
        for sample in samples:
            rows = [s for s in sample.sessions if s.pid in pool]
            if len(rows) == size and all(_in_use(s, held_idle_s) for s in rows):
                saturated += 1
                queries.update(s.query_id for s in rows if s.query_id is not None)
        share = saturated / len(samples)
        if share < min_saturated:
            continue
        waiting = 1.0 if in_flight is None else max(0.0, 1 - size / in_flight)
        score = 100 * share * waiting * 0.5
        p95 = ((load or {}).get("totals") or {}).get("p95_ms")
        flight = (
            f"{in_flight:.1f} requests were in flight on average (Little's law over the load) "
            f"for {size} connections, so about {waiting:.0%} of the request time in those "
            "moments was spent waiting for one"
            if in_flight is not None
            else "further requests queued for one"
        )
        out.append(
            Finding(
                kind="pool_starvation",
                title=f"{owner}: all {size} pooled connections in use {share:.0%} of the time",
                score=round(score, 2),
                score_explanation=(
                    f"in {share:.0%} of activity samples every one of {owner}'s {size} pooled "
                    f"connections was in use (running, in a transaction, or idle under "
                    f"{held_idle_s * 1000:.0f} ms between statements); {flight}; half of "
                    "that wait is assumed recoverable"
                ),
                recommendation=(
                    "size the pool for the concurrency (max_size ≈ concurrent requests that "
                    "need the database), hold a connection only around the statements (not "
                    "while computing or calling out), or add a pooler"
                ),
                location=Location(process=owner),
                evidence={
                    "pool_size": size,
                    "saturated_share": round(share, 3),
                    "samples": len(samples),
                    "requests_in_flight": round(in_flight, 2) if in_flight is not None else None,
                    "held_idle_s": held_idle_s,
                    "busy_statements": [q for q, _ in queries.most_common(5)],
                    "load_p95_ms": p95,
                },
                source="postgres",
            )
        )
    return out


def dedupe(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per key (kind + where), keeping the highest score."""
    best: dict[str, Finding] = {}
    for f in findings:
        key = f.key() + "|" + (f.location.process or "")
        if key not in best or f.score > best[key].score:
            best[key] = f
    return list(best.values())
