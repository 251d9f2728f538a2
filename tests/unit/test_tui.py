"""The TUI on a replayed session: keys, screens, table contents, actions, quitting.

Driven with Textual's Pilot against ``tui.replay.ReplaySource`` over the recorded
fixture ``tests/fixtures/tui/demo_session.json`` (regenerate with
``python -m tests.fixtures.tui.make_replay``).
"""

from __future__ import annotations

import dataclasses
import doctest
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.widgets import ContentSwitcher, DataTable, Static
from textual.widgets.data_table import ColumnKey

from diag.live import (
    AttachProfiler,
    DetachProfiler,
    Explain,
    LiveSnapshot,
    MemrayWindow,
    PauseLoad,
    ResumeLoad,
    SaveReport,
    SetUsers,
    StopLoad,
)
from tui import format as tformat
from tui import keys, render, replay
from tui.app import DiagApp, run_app
from tui.replay import ReplaySource, load_frames, snapshot_from_json, snapshot_to_json
from tui.screens import StacksScreen, finding_keys

FIXTURE = Path(__file__).parents[1] / "fixtures" / "tui" / "demo_session.json"
MEASURING = 8  # a frame index in the measured window (all findings, locks present)


@pytest.fixture(scope="module")
def frames() -> list[LiveSnapshot]:
    return load_frames(FIXTURE)[0]


def _plain(table: DataTable[Any]) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def _ready(pilot: Any, app: DiagApp, count: int = 1) -> None:
    for _ in range(200):
        await pilot.pause()
        if app.snapshots_applied >= count:
            return
    raise AssertionError("no snapshot reached the app")


async def _replies(pilot: Any, app: DiagApp, count: int) -> None:
    for _ in range(200):
        await pilot.pause()
        if len(app.replies) >= count:
            return
    raise AssertionError(f"only {len(app.replies)} action replies")


# ---- pure parts ---------------------------------------------------------------------------


@pytest.mark.parametrize("module", [tformat, keys, render])
def test_doctests(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


def test_replay_json_round_trip(frames: list[LiveSnapshot]) -> None:
    assert len(frames) >= 10
    for frame in frames:
        data = json.loads(json.dumps(snapshot_to_json(frame)))
        assert snapshot_from_json(data) == frame
    assert frames[MEASURING].plans and frames[MEASURING].findings


def test_replay_rejects_a_foreign_file(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"frames": []}')
    with pytest.raises(ValueError, match=r"not an archon-diag\.live-replay/1 file"):
        load_frames(path)
    assert replay.main([str(path)]) == 2


def test_replay_modes(frames: list[LiveSnapshot]) -> None:
    calls = ReplaySource(frames[:3], mode="call")
    assert [calls.snapshot().elapsed_s for _ in range(4)] == [
        frames[0].elapsed_s,
        frames[1].elapsed_s,
        frames[2].elapsed_s,
        frames[2].elapsed_s,  # no loop: stays on the last frame
    ]
    looped = ReplaySource(frames[:2], mode="call", loop=True)
    assert [looped.snapshot().elapsed_s for _ in range(3)][2] == frames[0].elapsed_s
    now = [100.0]
    timed = ReplaySource(frames, mode="time", interval_s=1.0, clock=lambda: now[0])
    assert timed.snapshot() == frames[0]
    now[0] += 2.5
    assert timed.snapshot() == frames[2]
    fixed = ReplaySource(frames, mode="fixed", start=4)
    assert fixed.snapshot() == fixed.snapshot() == frames[4]


def test_replay_reflects_actions(frames: list[LiveSnapshot]) -> None:
    source = ReplaySource(frames, mode="fixed")
    reply = source.act(PauseLoad())
    assert "PauseLoad" in reply
    snap = source.snapshot()
    assert snap.load_state == "paused" and snap.messages[-1] == reply
    source.act(StopLoad())
    assert source.snapshot().load_state == "stopped"
    source.close()
    assert source.actions == [PauseLoad(), StopLoad()] and source.close_calls == 1


def test_status_line_says_everything_in_words(frames: list[LiveSnapshot]) -> None:
    snap = frames[MEASURING]
    text = render.status_line(snap, 200).plain
    assert text.startswith("▶ running")
    assert "measuring · load" in text and tformat.fmt_duration(snap.elapsed_s) in text
    for probe in snap.probes:
        assert f"{probe.name}{tformat.health_mark(probe.state)}" in text
    assert len(render.status_line(snap, 80).plain) <= 80


def test_findings_block_renders_in_a_fixed_width_console(frames: list[LiveSnapshot]) -> None:
    snap = frames[MEASURING]
    console = Console(width=80, record=True, color_system=None, file=io.StringIO())
    console.print(render.findings_block(snap.findings, 80, 3))
    lines = console.export_text().splitlines()
    assert lines[0] == f"TOP FINDINGS ({len(snap.findings)})"
    assert lines[1].startswith("HIGH  34.0  N+1")  # severity as a word, then the score
    assert len(lines) == 4


# ---- the app ------------------------------------------------------------------------------


async def test_overview_shows_the_snapshot(frames: list[LiveSnapshot]) -> None:
    source = ReplaySource(frames, mode="fixed", start=MEASURING)
    app = DiagApp(source, refresh_s=None)
    snap = frames[MEASURING]
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(pilot, app)
        status = str(app.query_one("#status", Static).render())
        assert "running" in status and "measuring" in status
        rows = _plain(app.query_one("#ov-procs", DataTable))
        assert [r[0] for r in rows] == [p.label for p in snap.processes]
        assert rows[0][1] == f"{snap.processes[0].series[-1].cpu_percent:.0f}%"
        assert rows[0][5] == "pyspy"
        load = str(app.query_one("#ov-load").render())
        assert f"{snap.load[-1].users}" in load and "p95" in load
        findings = str(app.query_one("#ov-findings").render())
        assert snap.findings[0].title in findings


async def test_keys_switch_screens(frames: list[LiveSnapshot]) -> None:
    app = DiagApp(ReplaySource(frames, mode="fixed", start=MEASURING), refresh_s=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(pilot, app)
        switcher = app.query_one("#screens", ContentSwitcher)
        for screen, digit, title in keys.SCREENS:
            await pilot.press(digit)
            assert switcher.current == screen == app.current
            assert f"[{digit} {title}]" in str(app.query_one("#tabs", Static).render())
        await pilot.press("right_square_bracket")
        assert switcher.current == "overview"
        await pilot.press("left_square_bracket")
        assert switcher.current == "report"
        await pilot.press("question_mark")
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        assert type(app.screen).__name__ == "Screen"


async def test_tables_match_the_snapshot(frames: list[LiveSnapshot]) -> None:
    snap = frames[MEASURING]
    app = DiagApp(ReplaySource(frames, mode="fixed", start=MEASURING), refresh_s=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(pilot, app)

        await pilot.press("7")  # Report: the same findings in the same order as headless
        table = app.query_one("#rp-table", DataTable)
        assert [str(k.value) for k in table.rows] == finding_keys(snap.findings)
        rows = _plain(table)
        assert [r[2] for r in rows] == [f"{f.score:.1f}" for f in snap.findings]
        assert [r[1] for r in rows] == [tformat.SEVERITY_TAG[f.severity] for f in snap.findings]
        detail = str(app.query_one("#rp-detail", Static).render())
        assert snap.findings[0].recommendation in detail

        await pilot.press("6")  # Load: one row per endpoint
        rows = _plain(app.query_one("#ld-table", DataTable))
        assert [r[1] for r in rows] == [tformat.fmt_count(e.requests) for e in snap.endpoints]
        assert rows[0][0] == snap.endpoints[0].name

        await pilot.press("4")  # Queries: statements by queryid, the plan of the selected
        table = app.query_one("#q-table", DataTable)
        assert [int(str(k.value)) for k in table.rows] == [s.queryid for s in snap.statements]
        plan = str(app.query_one("#q-plan", Static).render())
        assert "plan (generic)" in plan and "N+1" in plan
        await pilot.press("down")
        plan = str(app.query_one("#q-plan", Static).render())
        assert "Seq Scan on archon_tasks" in plan
        assert "index: CREATE INDEX CONCURRENTLY ON archon_tasks (status)" in plan
        await pilot.press("down")
        plan = str(app.query_one("#q-plan", Static).render())
        assert "press e to EXPLAIN" in plan

        await pilot.press("5")  # Locks: waits and blocked sessions
        waits = _plain(app.query_one("#lk-waits", DataTable))
        assert {r[0] for r in waits} == {w.wait for w in snap.waits}
        blocking = _plain(app.query_one("#lk-blocking", DataTable))
        assert [r[0] for r in blocking] == [str(b.pid) for b in snap.blocking]

        await pilot.press("3")  # Memory: verdicts, suspects from the memory findings
        rows = _plain(app.query_one("#mem-table", DataTable))
        assert rows[1][4].startswith("heap leak")
        assert "Agent chat sessions" in str(app.query_one("#mem-suspects").render())

        await pilot.press("2", "enter")  # Hotspots: drill into the stacks
        assert isinstance(app.screen, StacksScreen)
        assert app.screen.row == snap.hotspots[0]
        await pilot.press("escape")
        await pilot.press("down")
        stacks = str(app.query_one("#hs-stacks", Static).render())
        assert snap.hotspots[1].function in stacks


async def test_actions_reach_the_source(frames: list[LiveSnapshot]) -> None:
    source = ReplaySource(frames, mode="fixed", start=MEASURING)
    app = DiagApp(source, refresh_s=None)
    snap = frames[MEASURING]
    users = snap.load[-1].users
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(pilot, app)
        await pilot.press("plus", "plus", "minus")
        await pilot.press("down", "a")  # second process: attach py-spy... it is attached
        await pilot.press("w")
        await pilot.press("4", "down", "e")  # explain the second statement
        await pilot.press("r", "p")
        await _replies(pilot, app, 8)
        app.poll()  # the paused state shows up in the next snapshot
        await _ready(pilot, app, 2)
        await pilot.press("p", "s")
        await _replies(pilot, app, 10)
    assert source.actions == [
        SetUsers(users + 10),
        SetUsers(users + 20),
        SetUsers(users + 10),
        DetachProfiler(snap.processes[1].pid),
        MemrayWindow(snap.processes[1].pid),
        Explain(snap.statements[1].queryid),
        SaveReport(),
        PauseLoad(),
        ResumeLoad(),
        StopLoad(),
    ]
    assert app.replies[-1] == "replay: StopLoad() recorded"


async def test_profiler_key_attaches_when_not_attached(frames: list[LiveSnapshot]) -> None:
    source = ReplaySource(frames, mode="fixed", start=MEASURING)
    app = DiagApp(source, refresh_s=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(pilot, app)
        await pilot.press("down", "down", "a")  # archon-mcp has no profiler
        await _replies(pilot, app, 1)
    assert source.actions == [AttachProfiler(frames[MEASURING].processes[2].pid)]


async def test_q_closes_the_source_once_and_exits(frames: list[LiveSnapshot]) -> None:
    source = ReplaySource(frames, mode="call")
    app = DiagApp(source, refresh_s=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(pilot, app, 3)  # the timer keeps polling
        await pilot.press("q")
        for _ in range(100):
            if app.closed:
                break
            await pilot.pause(0.01)
        calls = source.snapshot_calls
    assert app.closed and source.close_calls == 1 and app.return_code == 0
    time.sleep(0.15)
    assert source.snapshot_calls == calls  # no polling after close


class _SlowSource(ReplaySource):
    """Blocks in snapshot() until released: the UI must not wait for it."""

    def __init__(self, frames: list[LiveSnapshot]) -> None:
        super().__init__(frames, mode="fixed", start=MEASURING)
        self.release = threading.Event()
        self.entered = threading.Event()

    def snapshot(self) -> LiveSnapshot:
        if self.snapshot_calls >= 1:
            self.entered.set()
            self.release.wait(10)
        return super().snapshot()


async def test_a_slow_source_never_stalls_the_screen(frames: list[LiveSnapshot]) -> None:
    source = _SlowSource(frames)
    app = DiagApp(source, refresh_s=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(pilot, app)
        app.poll()
        for _ in range(500):
            if source.entered.is_set():  # the worker thread is stuck in snapshot()
                break
            await pilot.pause(0.01)
        assert source.entered.is_set()
        started = time.perf_counter()
        await pilot.press("7", "2")
        assert app.query_one("#screens", ContentSwitcher).current == "hotspots"
        app.poll()  # a second poll is not queued behind the stuck one
        assert time.perf_counter() - started < 2
        source.release.set()
        await _ready(pilot, app, 2)
    assert source.snapshot_calls == 2


async def test_updated_tables_keep_no_stale_renders(frames: list[LiveSnapshot]) -> None:
    """Cells updated in place every refresh must not pile up in the table's render
    caches: they used to grow by every refresh's cells until 10,000 per table (most of
    the live demo's RSS growth over 10 minutes)."""
    source = ReplaySource(frames, mode="call", loop=True)
    app = DiagApp(source, refresh_s=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(pilot, app)
        table = app.query_one("#ov-procs", DataTable)
        cells = table.row_count * len(table.columns)
        for n in range(2, 42):
            app.poll()
            await _ready(pilot, app, n)
            await pilot.pause()  # let the table render the new figures
        assert cells > 0 and len(table.rows) == table.row_count
        assert len(table._cell_render_cache) <= 3 * (cells + len(table.columns))
        assert len(table._line_cache) <= 3 * 24


async def test_columns_widen_when_a_cell_updated_in_place_grows(
    frames: list[LiveSnapshot],
) -> None:
    """At a session's start its processes have no sample yet ("–" for CPU and RSS); the
    same rows are then updated in place, and their figures must show in full."""
    snap = frames[MEASURING]
    empty = dataclasses.replace(
        snap, processes=tuple(dataclasses.replace(p, series=()) for p in snap.processes)
    )
    app = DiagApp(ReplaySource([empty, snap], mode="call"), refresh_s=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(pilot, app)
        table = app.query_one("#ov-procs", DataTable)
        assert _plain(table)[0][3] == "–"
        app.poll()
        await _ready(pilot, app, 2)
        await pilot.pause()
        rss = tformat.fmt_bytes(snap.processes[0].series[-1].rss_bytes)
        assert _plain(table)[0][3] == rss  # the same row, updated in place
        # what decides the drawn width (cell padding on both sides)
        assert table.columns[ColumnKey("rss")].get_render_width(table) >= len(rss) + 2


async def test_drawn_text_widths_are_forgotten_every_minute(
    frames: list[LiveSnapshot], monkeypatch: pytest.MonkeyPatch
) -> None:
    """rich's cell-width cache holds every line drawn until 4,096 of them: the app
    empties it every ``FORGET_WIDTHS_EVERY`` snapshots."""
    import rich.cells

    from tui import app as app_module

    monkeypatch.setattr(app_module, "FORGET_WIDTHS_EVERY", 5)
    source = ReplaySource(frames, mode="call", loop=True)
    app = DiagApp(source, refresh_s=None)
    sizes = []
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(pilot, app)
        for n in range(2, 11):
            app.poll()
            await _ready(pilot, app, n)
            await pilot.pause()
            sizes.append(rich.cells.cached_cell_len.cache_info().currsize)
    # emptied after the 5th and the 10th snapshot, refilled by the renders in between
    assert sizes[3] < sizes[2] and sizes[2] > 0, sizes
    assert sizes[8] < sizes[7], sizes


class _BrokenSource(ReplaySource):
    def snapshot(self) -> LiveSnapshot:
        raise RuntimeError("session lost its database connection")

    def act(self, action: Any) -> str:
        raise RuntimeError("cannot do that now")


async def test_source_errors_show_on_the_message_line(frames: list[LiveSnapshot]) -> None:
    app = DiagApp(_BrokenSource(frames), refresh_s=None)
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(100):
            await pilot.pause()
            if "snapshot failed" in str(app.query_one("#message", Static).render()):
                break
        assert "session lost its database connection" in str(
            app.query_one("#message", Static).render()
        )
        await pilot.press("r")
        await _replies(pilot, app, 1)
        assert app.replies[0] == "SaveReport failed: RuntimeError: cannot do that now"


class _LaterNotices(ReplaySource):
    """Answers an action at once and reports its outcome later, as a session notice
    (how the live session answers EXPLAIN and memray windows)."""

    def act(self, action: Any) -> str:
        self.actions.append(action)
        return "planning queryid 1…"

    def notice(self, text: str) -> None:
        with self._lock:
            self._messages.append(text)


async def test_a_notice_after_an_answer_replaces_it(frames: list[LiveSnapshot]) -> None:
    source = _LaterNotices(frames, mode="fixed", start=MEASURING)
    app = DiagApp(source, refresh_s=None)

    def line() -> str:
        return str(app.query_one("#message", Static).render())

    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(pilot, app)
        await pilot.press("e")
        await _replies(pilot, app, 1)
        app.poll()
        await _ready(pilot, app, 2)
        assert line() == "planning queryid 1…"  # no notice since: the answer stays
        source.notice("plan ready for queryid 1")
        app.poll()
        await _ready(pilot, app, 3)
        assert line() == "plan ready for queryid 1"


def test_run_app_closes_the_source_when_the_app_crashes(frames: list[LiveSnapshot]) -> None:
    source = ReplaySource(frames, mode="fixed")

    class Crashing(DiagApp):
        def run(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_app(source, app_factory=Crashing)
    assert source.close_calls == 1


def test_key_functions_follow_the_load_state(frames: list[LiveSnapshot]) -> None:
    snap = dataclasses.replace(frames[MEASURING], load_state="off")
    assert keys.stop_or_start(snap.load_state) is None
    assert keys.pause_or_resume("stopped") is None
    dead = dataclasses.replace(snap.processes[0], alive=False)
    assert keys.toggle_profiler(dead) is None and keys.memray_window(dead) is None
