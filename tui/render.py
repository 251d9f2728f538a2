"""Renderables for the TUI: pure functions of a snapshot (and a width) -> rich ``Text``.

No widget state here, so each block can be tested by rendering into a ``Console``.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from diag.findings import Finding
from diag.live import HotspotRow, LiveSnapshot, LoadPoint, PlanView, ProcessView, StatementRow
from tui.format import (
    HEALTH_STYLE,
    LOAD_MARK,
    SEVERITY_STYLE,
    SEVERITY_TAG,
    bar,
    clip,
    fmt_bytes,
    fmt_duration,
    fmt_ms,
    fmt_signed_bytes,
    health_mark,
    spark,
    truncate,
)
from tui.keys import SCREENS

MEMORY_KINDS = ("memory_leak", "fragmentation", "fd_leak", "thread_leak")


def severity_text(finding: Finding) -> Text:
    sev = finding.severity
    return Text(SEVERITY_TAG[sev], style=SEVERITY_STYLE[sev])


def tab_bar(current: str) -> Text:
    """The screen names with their keys; the current one in brackets (not only in colour)."""
    text = Text()
    for screen, key, title in SCREENS:
        if screen == current:
            text.append(f"[{key} {title}]", style="bold reverse")
        else:
            text.append(f" {key} {title} ", style="dim")
    text.append("  ? help", style="dim")
    return text


def status_line(snap: LiveSnapshot | None, width: int) -> Text:
    """Load state, run time, phase and shape, then every probe's health mark."""
    if snap is None:
        return Text("waiting for the session's first snapshot …", style="dim")
    mark = LOAD_MARK.get(snap.load_state, "?")
    text = Text()
    text.append(f"{mark} {snap.load_state}", style="bold")
    text.append(f"  {fmt_duration(snap.elapsed_s)}  {snap.phase} · {snap.shape}")
    text.append("  │ ")
    for probe in snap.probes:
        text.append(f"{probe.name}{health_mark(probe.state)} ", style=HEALTH_STYLE.get(probe.state))
    text.truncate(width, overflow="ellipsis")
    return text


def _rate(points: Sequence[LoadPoint]) -> tuple[float, float]:
    if not points:
        return 0.0, 0.0
    last = points[-1]
    share = last.fails_per_s / last.rps * 100 if last.rps else 0.0
    return last.fails_per_s, share


def load_block(snap: LiveSnapshot, width: int) -> Text:
    """Users, rps, p50/p95/p99 and errors with sparklines."""
    pts = snap.load
    last = pts[-1] if pts else None
    sw = max(0, width - 20)
    text = Text()
    text.append("LOAD", style="bold")
    text.append(f"  {LOAD_MARK.get(snap.load_state, '?')} {snap.load_state}\n")
    if last is None:
        text.append("no load data (load off or not started)", style="dim")
        return text
    fails, share = _rate(pts)
    rows: list[tuple[str, str, list[float | None]]] = [
        ("users", f"{last.users}", [p.users for p in pts]),
        ("rps", f"{last.rps:.1f}", [p.rps for p in pts]),
        ("p50", fmt_ms(last.p50_ms), [p.p50_ms for p in pts]),
        ("p95", fmt_ms(last.p95_ms), [p.p95_ms for p in pts]),
        ("p99", fmt_ms(last.p99_ms), [p.p99_ms for p in pts]),
        ("errors", f"{fails:.1f}/s {share:.1f}%", [p.fails_per_s for p in pts]),
    ]
    for i, (label, value, series) in enumerate(rows):
        style = "red" if label == "errors" and fails > 0 else "cyan"
        text.append(f"{label:<7}{value:>12} ")
        text.append(spark(series, sw), style=style)
        if i < len(rows) - 1:
            text.append("\n")
    return text


def db_block(snap: LiveSnapshot, width: int) -> Text:
    """Database time per second, connections, the top waits and blocked sessions."""
    text = Text()
    text.append("DATABASE\n", style="bold")
    if snap.db_time:
        ms = snap.db_time[-1][1]
        text.append(f"db time {ms:>6.0f} ms/s ")
        text.append(spark([v for _t, v in snap.db_time], max(0, width - 20)), style="magenta")
    else:
        text.append("db time  –", style="dim")
    used, limit = snap.connections
    text.append(f"\nconns   {used}/{limit}" if limit else "\nconns   –")
    blocked = len(snap.blocking)
    if blocked:
        text.append(f"   ⚠ {blocked} blocked", style="bold red")
    text.append("\nwaits (avg sessions)")
    for wait in sorted(snap.waits, key=lambda w: -w.sessions)[:3]:
        text.append(
            f"\n  {truncate(wait.wait, width - 10):<{max(1, width - 10)}}{wait.sessions:>6.1f}"
        )
    return text


def findings_block(findings: Sequence[Finding], width: int, limit: int) -> Text:
    """The top findings, one line each: severity word, score, title."""
    text = Text()
    text.append(f"TOP FINDINGS ({len(findings)})", style="bold")
    if not findings:
        text.append("\nnone yet", style="dim")
    for finding in findings[:limit]:
        text.append("\n")
        text.append_text(severity_text(finding))
        text.append(f" {finding.score:>5.1f}  ")
        text.append(truncate(finding.title, max(10, width - 13)))
    return text


def rss_values(process: ProcessView) -> list[float | None]:
    return [float(p.rss_bytes) for p in process.series]


def rss_change(process: ProcessView) -> str:
    if len(process.series) < 2:
        return "–"
    return fmt_signed_bytes(process.series[-1].rss_bytes - process.series[0].rss_bytes)


def process_cells(process: ProcessView, spark_width: int) -> list[object]:
    """Overview row: name, CPU now and trend, RSS now and trend, profilers attached."""
    last = process.series[-1] if process.series else None
    label = process.label if process.alive else f"{process.label} (gone)"
    return [
        label,
        f"{last.cpu_percent:.0f}%" if last else "–",
        Text(spark([p.cpu_percent for p in process.series], spark_width), style="green"),
        fmt_bytes(last.rss_bytes) if last else "–",
        Text(spark(rss_values(process), spark_width, floor=None), style="blue"),
        ",".join(process.profilers) or "–",
    ]


def stacks_text(row: HotspotRow | None, width: int, frames: int | None = 6) -> Text:
    """The stacks through a hotspot, leaf last; ``frames`` limits the depth shown."""
    text = Text()
    if row is None:
        return Text("no hotspot selected", style="dim")
    text.append(f"Stacks through {row.function}", style="bold")
    text.append(f"  self {row.self_percent:.1f}%  total {row.total_percent:.1f}%")
    if not row.stacks:
        text.append("\n(no stacks recorded for this function)", style="dim")
    for n, stack in enumerate(row.stacks, 1):
        parts = stack.split(";")
        shown = parts if frames is None else parts[-frames:]
        text.append(f"\n#{n}" + (" …" if len(shown) < len(parts) else ""), style="dim")
        depth = len(parts) - len(shown)
        for frame in shown:
            style = "bold" if frame == row.function else ""
            indent = "  " * min(depth, 10)
            text.append("\n" + indent + truncate(frame, width - len(indent)), style=style)
            depth += 1
    return text


def plan_text(
    statement: StatementRow | None, plan: PlanView | None, advice: Sequence[str], width: int
) -> Text:
    """The plan tree with its tips and index advice, or how to get one."""
    if statement is None:
        return Text("no statement selected", style="dim")
    text = Text()
    text.append(f"queryid {statement.queryid}  ", style="bold")
    text.append(truncate(statement.sql, max(10, width - 28)))
    if plan is None:
        text.append("\nno plan yet: press e to EXPLAIN this statement", style="yellow")
    else:
        text.append(f"\nplan ({plan.source})", style="bold")
        for line in plan.tree.splitlines():
            text.append("\n" + clip(line, width))
        for tip in plan.tips:
            text.append("\ntip: ", style="bold yellow")
            text.append(tip)
    for line in dict.fromkeys([*(plan.index_advice if plan else ()), *advice]):
        text.append("\nindex: ", style="bold green")
        text.append(line)
    return text


def finding_detail(finding: Finding | None, width: int) -> Text:
    """Everything a finding says: where, why this score, what to do, the evidence."""
    if finding is None:
        return Text("no findings yet", style="dim")
    text = Text()
    text.append_text(severity_text(finding))
    text.append(f" {finding.score:.1f}  {finding.kind}  ", style="bold")
    text.append(finding.title)
    text.append("\nwhere: ", style="bold")
    text.append(finding.location.describe())
    if finding.location.sql:
        text.append("\nsql: ", style="bold")
        text.append(truncate(finding.location.sql, width - 5))
    text.append("\nscore: ", style="bold")
    text.append(finding.score_explanation)
    text.append("\nfix: ", style="bold green")
    text.append(finding.recommendation)
    if finding.evidence:
        items = ", ".join(f"{k}={v}" for k, v in finding.evidence.items())
        text.append("\nevidence: ", style="bold")
        text.append(truncate(items, width - 10))
    return text


def connections_text(snap: LiveSnapshot, width: int) -> Text:
    used, limit = snap.connections
    text = Text()
    text.append("CONNECTIONS ", style="bold")
    if not limit:
        text.append("unknown", style="dim")
        return text
    share = used / limit
    text.append(f"{used}/{limit} ({share * 100:.0f}%) ")
    text.append(bar(share, max(0, min(30, width - 30))), style="red" if share > 0.8 else "green")
    if snap.blocking:
        text.append(f"   ⚠ {len(snap.blocking)} blocked sessions", style="bold red")
    else:
        text.append("   no blocked sessions", style="dim")
    return text


def memory_suspects(findings: Sequence[Finding], width: int) -> Text:
    text = Text()
    suspects = [f for f in findings if f.kind in MEMORY_KINDS]
    text.append(f"LEAK SUSPECTS ({len(suspects)})", style="bold")
    if not suspects:
        text.append("\nnone: no memory finding so far", style="dim")
    for finding in suspects:
        text.append("\n")
        text.append_text(severity_text(finding))
        text.append(f" {finding.score:>5.1f}  {truncate(finding.title, width - 13)}")
        where = finding.location.code or finding.location.process
        if where:
            text.append("\n      " + truncate(where, width - 6), style="dim")
        text.append("\n      " + truncate(finding.score_explanation, width - 6), style="dim")
    return text


def load_summary(snap: LiveSnapshot, width: int) -> Text:
    """One line of totals above the per-endpoint table."""
    total = sum(e.requests for e in snap.endpoints)
    fails = sum(e.failures for e in snap.endpoints)
    last = snap.load[-1] if snap.load else None
    text = Text()
    text.append(f"{LOAD_MARK.get(snap.load_state, '?')} {snap.load_state}  ", style="bold")
    if last is not None:
        text.append(f"{last.users} users  {last.rps:.1f} rps  p95 {fmt_ms(last.p95_ms)}  ")
    text.append(f"{total} requests  {fails} failed ({fails / total * 100 if total else 0:.1f}%)")
    if snap.load:
        text.append("\nrps ")
        text.append(spark([p.rps for p in snap.load], max(0, width // 2 - 6)), style="cyan")
        text.append("  p95 ")
        text.append(spark([p.p95_ms for p in snap.load], max(0, width // 2 - 6)), style="yellow")
    text.truncate(width * 2)
    return text


def explain_advice(findings: Sequence[Finding], queryid: int) -> list[str]:
    """Index advice that the ranked findings give for one statement."""
    return [
        f.recommendation
        for f in findings
        if f.kind == "missing_index" and f.location.queryid == queryid and f.recommendation
    ]


def message_line(
    messages: Sequence[str], action_reply: str, width: int, seen: Sequence[str] = ()
) -> Text:
    """The newest of: the last action's answer, the session's last notice. ``seen`` are
    the notices there were when the answer came: a notice after it (the plan an EXPLAIN
    started is ready, a memray window failed) replaces it.

    >>> str(message_line(("a",), "planning…", 40, seen=("a",)))
    'planning…'
    >>> str(message_line(("a", "plan ready"), "planning…", 40, seen=("a",)))
    'plan ready'
    >>> str(message_line((), "", 40)), str(message_line(("a",), "", 40))
    ('', 'a')
    """
    newer = bool(messages) and tuple(messages) != tuple(seen)
    answer = action_reply and not newer
    line = action_reply if answer else (messages[-1] if messages else "")
    return Text(truncate(line, width), style="italic")


def keys_line(width: int) -> Text:
    text = Text(
        "s stop  p pause  +- users  a pyspy  w memray  e explain  r save  ? help  q quit",
        style="dim",
    )
    text.truncate(width, overflow="ellipsis")
    return text
