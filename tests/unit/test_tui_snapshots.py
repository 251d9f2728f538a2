"""SVG snapshots of the TUI at 80x24 on one fixed replay frame (pytest-textual-snapshot).

Frozen: the terminal size (80x24), the data (one recorded frame, ``mode="fixed"``, no
refresh timer) and the clock (the app shows only the snapshot's run time, never the
wall clock). Update after an intended change with ``pytest --snapshot-update``
and look at the SVGs under ``tests/unit/__snapshots__/test_tui_snapshots/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tui.app import DiagApp
from tui.replay import ReplaySource

FIXTURE = Path(__file__).parents[1] / "fixtures" / "tui" / "demo_session.json"
SIZE = (80, 24)


def _app() -> DiagApp:
    source = ReplaySource.from_file(FIXTURE, mode="fixed", start=9)
    return DiagApp(source, title="archon-diag", refresh_s=None)


async def _first_snapshot(pilot: Any) -> None:
    for _ in range(200):
        await pilot.pause()
        if pilot.app.snapshots_applied:
            return
    raise AssertionError("no snapshot reached the app")


def test_overview(snap_compare: Any) -> None:
    assert snap_compare(_app(), terminal_size=SIZE, run_before=_first_snapshot)


def test_queries_plan_with_tips_and_index_advice(snap_compare: Any) -> None:
    assert snap_compare(_app(), press=["4", "down"], terminal_size=SIZE, run_before=_first_snapshot)


def test_report(snap_compare: Any) -> None:
    assert snap_compare(_app(), press=["7"], terminal_size=SIZE, run_before=_first_snapshot)
