"""The seven views (panes of one switcher) and the two modal screens (help, stacks).

Each pane only renders a ``LiveSnapshot`` given to ``show()``; selection (the process a
profiler key acts on, the statement ``e`` explains) lives in the app's ``Selection``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.console import RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import DataTable, Static

from diag.findings import Finding
from diag.live import HotspotRow, LiveSnapshot, ProcessView
from tui import render
from tui.format import bar, fmt_bytes, fmt_count, fmt_ms, spark, truncate
from tui.keys import HELP, pick_process, pick_statement


@dataclass
class Selection:
    """What the action keys act on; kept across refreshes and screens."""

    pid: int | None = None
    queryid: int | None = None
    hotspot: str | None = None
    finding: str | None = None


Row = tuple[str, Sequence[object]]


def sync_table(table: DataTable[Any], rows: Sequence[Row], keep: str | None = None) -> None:
    """Show ``rows`` (key, cells) in ``table`` without losing the cursor.

    Same keys in the same order: only the changed cells are updated (cheap, no flicker),
    and an auto-width column widens to its new text: a row first shown before its process
    had a sample ("–") kept a 3-cell RSS column for the whole run ("85." for 85.3 MiB).
    Otherwise the table is rebuilt and the cursor put back on ``keep`` (or the row it was on).
    """
    keys = [key for key, _cells in rows]
    current = [str(row_key.value) for row_key in table.rows]
    if keys == current:
        columns = list(table.columns)
        changed = False
        for key, cells in rows:
            old = table.get_row(key)
            for column, cell, before in zip(columns, cells, old, strict=False):
                if cell != before:
                    table.update_cell(key, column, cell, update_width=True)
                    changed = True
        if changed:
            forget_stale_renders(table)
        return
    if keep is None and current and 0 <= table.cursor_row < len(current):
        keep = current[table.cursor_row]
    table.clear()
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if keep in keys:
        table.move_cursor(row=keys.index(keep), animate=False)


def forget_stale_renders(table: DataTable[Any]) -> None:
    """Drop the table's rendered cells, rows and lines of earlier updates.

    Each ``update_cell`` bumps the table's update counter, which is part of every
    render-cache key: entries of earlier counts are never hit again, yet they stay until
    the caches are full (10,000 cells, 1,000 rows, 1,000 lines per table). At one refresh
    a second that is minutes of growth, and it was most of the live demo's RSS growth
    (+30 MiB in 10 min, mostly Rich segments and Textual strips). ``clear()`` drops them
    the same way when the table is rebuilt; the rows on screen re-render anyway, since the
    counter changed."""
    clear = getattr(table, "_clear_caches", None)
    if callable(clear):
        clear()


def row_key(event: DataTable.RowHighlighted | DataTable.RowSelected) -> str | None:
    value = event.row_key.value
    return None if value is None else str(value)


class SnapText(Widget):
    """A block of text built from the snapshot at the widget's current width."""

    DEFAULT_CSS = "SnapText { height: auto; }"

    def __init__(
        self,
        build: Callable[[LiveSnapshot, int], Text],
        placeholder: str = "waiting for data …",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._build = build
        self._placeholder = placeholder
        self._snap: LiveSnapshot | None = None

    def set_snapshot(self, snap: LiveSnapshot) -> None:
        if snap is not self._snap:
            self._snap = snap
            self.refresh(layout=True)

    def render(self) -> RenderableType:
        if self._snap is None:
            return Text(self._placeholder, style="dim")
        return self._build(self._snap, self.size.width or self.app.size.width)


class Pane(Vertical):
    """One view. ``show`` is called with each new snapshot while the pane is visible."""

    DEFAULT_CSS = "Pane { height: 1fr; }"

    def __init__(self, selection: Selection, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.selection = selection
        self.snap: LiveSnapshot | None = None

    @property
    def cols(self) -> int:
        return max(40, self.app.size.width)

    def show(self, snap: LiveSnapshot) -> None:
        self.snap = snap
        self.render_snapshot(snap)

    def render_snapshot(self, snap: LiveSnapshot) -> None:
        raise NotImplementedError

    def focus_main(self) -> None:
        tables = self.query(DataTable)
        if tables:
            tables.first().focus()


def _table(id: str, *columns: str | tuple[str, int]) -> DataTable[Any]:
    table: DataTable[Any] = DataTable(id=id, cursor_type="row", zebra_stripes=False)
    for column in columns:
        if isinstance(column, tuple):
            table.add_column(column[0], width=column[1], key=column[0])
        else:
            table.add_column(column, key=column)
    return table


# ---- 1 Overview ---------------------------------------------------------------------------


class OverviewPane(Pane):
    def compose(self) -> ComposeResult:
        with Horizontal(id="ov-top"):
            yield SnapText(render.load_block, id="ov-load")
            yield SnapText(render.db_block, id="ov-db")
        yield _table("ov-procs", "process", "cpu", "cpu trend", "rss", "rss trend", "profiler")
        yield SnapText(self._findings, id="ov-findings")

    def _findings(self, snap: LiveSnapshot, width: int) -> Text:
        limit = max(1, self.query_one("#ov-findings").size.height - 1)
        return render.findings_block(snap.findings, width, limit)

    def render_snapshot(self, snap: LiveSnapshot) -> None:
        for block in self.query(SnapText):
            block.set_snapshot(snap)
        sw = max(6, (self.cols - 60) // 2)
        rows = [(str(p.pid), render.process_cells(p, sw)) for p in snap.processes]
        sync_table(self.query_one("#ov-procs", DataTable), rows, _str(self.selection.pid))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = row_key(event)
        if key is not None:
            self.selection.pid = int(key)


def _str(value: object) -> str | None:
    return None if value is None else str(value)


# ---- 2 Hotspots ---------------------------------------------------------------------------


def _hotspot_key(row: HotspotRow) -> str:
    return f"{row.process}|{row.function}"


class HotspotsPane(Pane):
    def compose(self) -> ComposeResult:
        yield _table("hs-table", ("self%", 6), ("total%", 6), ("process", 14), "function")
        yield Static("", id="hs-stacks")

    def _selected(self) -> HotspotRow | None:
        rows = self.snap.hotspots if self.snap else ()
        for row in rows:
            if _hotspot_key(row) == self.selection.hotspot:
                return row
        return rows[0] if rows else None

    def render_snapshot(self, snap: LiveSnapshot) -> None:
        fw = max(20, self.cols - 40)
        rows = [
            (
                _hotspot_key(h),
                [
                    f"{h.self_percent:.1f}",
                    f"{h.total_percent:.1f}",
                    truncate(h.process.split(" (pid ")[0], 14),
                    truncate(h.function, fw),
                ],
            )
            for h in snap.hotspots
        ]
        sync_table(self.query_one("#hs-table", DataTable), rows, self.selection.hotspot)
        self._render_stacks()

    def _render_stacks(self) -> None:
        if self.snap is not None and not self.snap.hotspots:
            text = Text("no hotspots yet: attach py-spy with a on a process", style="dim")
        else:
            text = render.stacks_text(self._selected(), self.cols - 2)
            text.append("\nenter: all frames", style="dim")
        self.query_one("#hs-stacks", Static).update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.selection.hotspot = row_key(event)
        self._render_stacks()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.selection.hotspot = row_key(event)
        row = self._selected()
        if row is not None:
            self.app.push_screen(StacksScreen(row))


# ---- 3 Memory -----------------------------------------------------------------------------


class MemoryPane(Pane):
    def compose(self) -> ComposeResult:
        yield _table(
            "mem-table", ("process", 23), ("rss", 9), ("change", 10), "rss trend", "leak verdict"
        )
        yield Static("", id="mem-selected")
        yield SnapText(lambda s, w: render.memory_suspects(s.findings, w), id="mem-suspects")

    def render_snapshot(self, snap: LiveSnapshot) -> None:
        sw = max(8, (self.cols - 64) // 2 + 4)
        vw = max(14, self.cols - 63 - sw)
        rows = []
        for p in snap.processes:
            last = p.series[-1] if p.series else None
            verdict = p.leak_verdict or "–"
            rows.append(
                (
                    str(p.pid),
                    [
                        truncate(p.label if p.alive else f"{p.label} (gone)", 23),
                        fmt_bytes(last.rss_bytes) if last else "–",
                        render.rss_change(p),
                        Text(spark_rss(p, sw), style="blue"),
                        Text(truncate(verdict, vw), style=_verdict_style(verdict)),
                    ],
                )
            )
        sync_table(self.query_one("#mem-table", DataTable), rows, _str(self.selection.pid))
        self._render_selected()
        self.query_one("#mem-suspects", SnapText).set_snapshot(snap)

    def _render_selected(self) -> None:
        processes = self.snap.processes if self.snap else ()
        process = pick_process(processes, self.selection.pid)
        text = Text()
        if process is not None:
            text.append(process.label, style="bold")
            text.append(": ")
            text.append(
                process.leak_verdict or "no verdict yet", _verdict_style(process.leak_verdict)
            )
            text.append(f"  · profilers: {', '.join(process.profilers) or 'none'}", style="dim")
        self.query_one("#mem-selected", Static).update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = row_key(event)
        if key is not None:
            self.selection.pid = int(key)
        self._render_selected()


def _verdict_style(verdict: str) -> str:
    """A leak verdict in bold red (its words already say it: "heap leak: ...")."""
    return "bold red" if "leak" in verdict and not verdict.startswith("no ") else ""


def spark_rss(process: ProcessView, width: int) -> str:
    return spark(render.rss_values(process), width, floor=None)


# ---- 4 Queries ----------------------------------------------------------------------------


class QueriesPane(Pane):
    def compose(self) -> ComposeResult:
        yield _table(
            "q-table", ("db%", 5), ("total", 8), ("calls", 7), ("mean", 8), ("rows", 7), "statement"
        )
        with VerticalScroll(id="q-plan-box"):
            yield Static("", id="q-plan")

    def render_snapshot(self, snap: LiveSnapshot) -> None:
        sw = max(20, self.cols - 48)
        rows = [
            (
                str(s.queryid),
                [
                    f"{s.share_percent:.1f}",
                    fmt_ms(s.total_ms),
                    fmt_count(s.calls),
                    fmt_ms(s.mean_ms),
                    fmt_count(s.rows),
                    truncate(s.sql, sw),
                ],
            )
            for s in snap.statements
        ]
        sync_table(self.query_one("#q-table", DataTable), rows, _str(self.selection.queryid))
        self._render_plan()

    def _render_plan(self) -> None:
        if self.snap is None:
            return
        statement = pick_statement(self.snap.statements, self.selection.queryid)
        if statement is None:
            text = Text("no statements yet (pg_stat_statements window not taken)", style="dim")
        else:
            plan = self.snap.plans.get(statement.queryid)
            advice = render.explain_advice(self.snap.findings, statement.queryid)
            text = render.plan_text(statement, plan, advice, self.cols - 4)
        self.query_one("#q-plan", Static).update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = row_key(event)
        if key is not None:
            self.selection.queryid = int(key)
        self._render_plan()


# ---- 5 Locks & connections ----------------------------------------------------------------


class LocksPane(Pane):
    def compose(self) -> ComposeResult:
        yield SnapText(render.connections_text, id="lk-conn")
        yield Static(Text("WAIT EVENTS (average active sessions)", style="bold"))
        yield _table("lk-waits", ("wait", 30), ("sessions", 8), ("", 24))
        yield Static(Text("BLOCKED SESSIONS", style="bold"))
        yield _table(
            "lk-blocking", ("pid", 7), ("blocked by", 12), ("wait", 20), ("secs", 6), "statement"
        )

    def render_snapshot(self, snap: LiveSnapshot) -> None:
        self.query_one("#lk-conn", SnapText).set_snapshot(snap)
        top = max((w.sessions for w in snap.waits), default=0.0) or 1.0
        waits = [
            (w.wait, [w.wait, f"{w.sessions:.1f}", Text(bar(w.sessions / top, 24), style="cyan")])
            for w in sorted(snap.waits, key=lambda w: -w.sessions)
        ]
        sync_table(self.query_one("#lk-waits", DataTable), waits)
        sw = max(16, self.cols - 60)
        blocking = [
            (
                str(b.pid),
                [
                    str(b.pid),
                    ",".join(str(p) for p in b.blocked_by),
                    truncate(b.wait, 20),
                    f"{b.seconds:.1f}",
                    truncate(b.sql, sw),
                ],
            )
            for b in snap.blocking
        ]
        sync_table(self.query_one("#lk-blocking", DataTable), blocking)


# ---- 6 Load -------------------------------------------------------------------------------


class LoadPane(Pane):
    def compose(self) -> ComposeResult:
        yield SnapText(render.load_summary, id="ld-summary")
        yield _table(
            "ld-table",
            "endpoint",
            ("reqs", 6),
            ("fail", 4),
            ("rps", 5),
            ("p50", 6),
            ("p95", 6),
            ("p99", 6),
            ("max", 6),
        )

    def render_snapshot(self, snap: LiveSnapshot) -> None:
        self.query_one("#ld-summary", SnapText).set_snapshot(snap)
        nw = max(16, self.cols - 56)
        rows = [
            (
                e.name,
                [
                    truncate(e.name, nw),
                    fmt_count(e.requests),
                    Text(fmt_count(e.failures), style="bold red" if e.failures else ""),
                    f"{e.rps:.1f}",
                    fmt_ms(e.p50_ms),
                    fmt_ms(e.p95_ms),
                    fmt_ms(e.p99_ms),
                    fmt_ms(e.max_ms),
                ],
            )
            for e in snap.endpoints
        ]
        sync_table(self.query_one("#ld-table", DataTable), rows)


# ---- 7 Report -----------------------------------------------------------------------------


def finding_keys(findings: Sequence[Finding]) -> list[str]:
    """Row keys for findings, unique even when two findings share a ``Finding.key()``."""
    seen: dict[str, int] = {}
    keys = []
    for finding in findings:
        key = finding.key()
        seen[key] = seen.get(key, 0) + 1
        keys.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return keys


class ReportPane(Pane):
    def compose(self) -> ComposeResult:
        yield _table("rp-table", ("#", 2), ("sev", 4), ("score", 5), ("kind", 14), "finding")
        with VerticalScroll(id="rp-detail-box"):
            yield Static("", id="rp-detail")

    def _selected(self) -> Finding | None:
        findings = self.snap.findings if self.snap else ()
        for key, finding in zip(finding_keys(findings), findings, strict=True):
            if key == self.selection.finding:
                return finding
        return findings[0] if findings else None

    def render_snapshot(self, snap: LiveSnapshot) -> None:
        tw = max(20, self.cols - 36)
        rows = [
            (
                key,
                [
                    str(i),
                    render.severity_text(f),
                    f"{f.score:.1f}",
                    truncate(f.kind, 14),
                    truncate(f.title, tw),
                ],
            )
            for i, (key, f) in enumerate(
                zip(finding_keys(snap.findings), snap.findings, strict=True), 1
            )
        ]
        sync_table(self.query_one("#rp-table", DataTable), rows, self.selection.finding)
        self._render_detail()

    def _render_detail(self) -> None:
        text = render.finding_detail(self._selected(), self.cols - 4)
        self.query_one("#rp-detail", Static).update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.selection.finding = row_key(event)
        self._render_detail()


PANES: dict[str, type[Pane]] = {
    "overview": OverviewPane,
    "hotspots": HotspotsPane,
    "memory": MemoryPane,
    "queries": QueriesPane,
    "locks": LocksPane,
    "load": LoadPane,
    "report": ReportPane,
}


# ---- modal screens ------------------------------------------------------------------------


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "close"),
        Binding("question_mark", "dismiss", "close"),
    ]

    def compose(self) -> ComposeResult:
        text = Text()
        text.append("archon-diag: keys\n\n", style="bold")
        for key, what in HELP:
            text.append(f"{key:>10}  ", style="bold")
            text.append(f"{what}\n")
        text.append(
            "\nseverity: CRIT > HIGH > MED > LOW > INFO\nprobes: ✓ ok  ! degraded  – off  ✗ failed",
            style="dim",
        )
        yield Static(text, id="help-body")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)


class StacksScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "close"),
        Binding("enter", "dismiss", "close"),
    ]

    def __init__(self, row: HotspotRow) -> None:
        super().__init__()
        self.row = row

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="stacks-body"):
            yield Static(render.stacks_text(self.row, self.app.size.width - 6, frames=None))
            yield Static(Text("esc: back", style="dim"))

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)


__all__ = ["PANES", "HelpScreen", "Pane", "Selection", "StacksScreen", "pick_process"]
