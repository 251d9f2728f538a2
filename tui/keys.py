"""Key handlers as pure functions: (what the screen shows, the key) -> the Action to send.

The app only wires keys to these and sends what they return through ``LiveSource.act``;
keeping them pure keeps the decisions testable without a terminal.
"""

from __future__ import annotations

from collections.abc import Sequence

from diag.live import (
    Action,
    AttachProfiler,
    DetachProfiler,
    Explain,
    MemrayWindow,
    PauseLoad,
    ProcessView,
    ResumeLoad,
    SetUsers,
    StatementRow,
    StopLoad,
)

# (screen id, key, title) in the order of the tab bar.
SCREENS: tuple[tuple[str, str, str], ...] = (
    ("overview", "1", "Overview"),
    ("hotspots", "2", "Hotspots"),
    ("memory", "3", "Memory"),
    ("queries", "4", "Queries"),
    ("locks", "5", "Locks"),
    ("load", "6", "Load"),
    ("report", "7", "Report"),
)

# key, what it does: the help panel and docs/tui.md show this list.
HELP: tuple[tuple[str, str], ...] = (
    ("1-7", "switch screen (the numbers in the tab bar)"),
    ("[ / ]", "previous / next screen"),
    ("↑ ↓ enter", "move in a table / open the stacks of a hotspot"),
    ("s", "stop the load (start it again when stopped)"),
    ("p", "pause / resume the load"),
    ("+ / -", "more / fewer users"),
    ("a", "attach / detach py-spy on the selected process"),
    ("w", "memray window (10 s) on the selected process"),
    ("e", "EXPLAIN the selected statement (Queries)"),
    ("r", "save the report and bundle"),
    ("?", "this help (esc closes it)"),
    ("ctrl+l", "redraw the whole screen"),
    ("q", "quit: stop everything the session started"),
)


def screen_for_key(key: str) -> str | None:
    """The screen a digit key opens.

    >>> screen_for_key("4"), screen_for_key("x")
    ('queries', None)
    """
    for screen, digit, _title in SCREENS:
        if key == digit:
            return screen
    return None


def cycle_screen(current: str, step: int) -> str:
    """The screen ``step`` places after ``current`` in the tab bar, wrapping round.

    >>> cycle_screen("overview", 1), cycle_screen("overview", -1)
    ('hotspots', 'report')
    """
    ids = [s for s, _d, _t in SCREENS]
    index = ids.index(current) if current in ids else 0
    return ids[(index + step) % len(ids)]


def stop_or_start(load_state: str) -> Action | None:
    """``s``: stop a running or paused load; start a stopped one again.

    The contract has no StartLoad: a stopped load is restarted with ResumeLoad.

    >>> stop_or_start("running"), stop_or_start("stopped"), stop_or_start("off")
    (StopLoad(), ResumeLoad(), None)
    """
    if load_state in ("running", "paused"):
        return StopLoad()
    if load_state == "stopped":
        return ResumeLoad()
    return None


def pause_or_resume(load_state: str) -> Action | None:
    """``p``: pause a running load, resume a paused one.

    >>> pause_or_resume("running"), pause_or_resume("paused"), pause_or_resume("off")
    (PauseLoad(), ResumeLoad(), None)
    """
    if load_state == "running":
        return PauseLoad()
    if load_state == "paused":
        return ResumeLoad()
    return None


def users_step(users: int) -> int:
    """How many users one ``+``/``-`` adds or removes at this level.

    >>> [users_step(n) for n in (1, 9, 10, 49, 50, 199, 200, 1000)]
    [1, 1, 5, 5, 10, 10, 50, 100]
    """
    if users < 10:
        return 1
    if users < 50:
        return 5
    if users < 200:
        return 10
    if users < 1000:
        return 50
    return 100


def change_users(current: int, pending: int | None, direction: int) -> SetUsers | None:
    """``+``/``-``: the next user count, counted from the last request still ramping.

    Locust ramps at its spawn rate, so the count on screen lags the request; pressing
    ``+`` twice must ask for two steps, not the same one twice.

    >>> change_users(50, None, +1), change_users(50, 60, +1)
    (SetUsers(users=60), SetUsers(users=70))
    >>> change_users(10, None, -1), change_users(1, None, -1)
    (SetUsers(users=9), None)
    """
    base = pending if pending is not None else current
    if direction > 0:
        return SetUsers(base + users_step(base))
    target = max(1, base - users_step(max(1, base - 1)))
    return None if target == base else SetUsers(target)


def toggle_profiler(process: ProcessView | None, profiler: str = "pyspy") -> Action | None:
    """``a``: attach the profiler to the selected process, or detach it if attached.

    >>> p = ProcessView("srv (pid 7)", 7, True, (), profilers=("pyspy",))
    >>> toggle_profiler(p), toggle_profiler(None)
    (DetachProfiler(pid=7, profiler='pyspy'), None)
    """
    if process is None or not process.alive:
        return None
    if profiler in process.profilers:
        return DetachProfiler(process.pid, profiler)
    return AttachProfiler(process.pid, profiler)


def memray_window(process: ProcessView | None, seconds: float = 10.0) -> Action | None:
    """``w``: a bounded memray window on the selected process (none while one runs).

    >>> memray_window(ProcessView("srv (pid 7)", 7, True, ()))
    MemrayWindow(pid=7, seconds=10.0)
    >>> memray_window(ProcessView("srv (pid 7)", 7, True, (), profilers=("memray",))) is None
    True
    """
    if process is None or not process.alive or "memray" in process.profilers:
        return None
    return MemrayWindow(process.pid, seconds)


def explain(statement: StatementRow | None) -> Explain | None:
    """``e``: EXPLAIN the selected statement.

    >>> explain(StatementRow(42, "SELECT 1", 1, 1.0, 1.0, 1, 1.0)), explain(None)
    (Explain(queryid=42), None)
    """
    return None if statement is None else Explain(statement.queryid)


def pick_process(processes: Sequence[ProcessView], pid: int | None) -> ProcessView | None:
    """The selected process, else the first live one, else the first.

    >>> a, b = ProcessView("a", 1, False, ()), ProcessView("b", 2, True, ())
    >>> pick_process([a, b], 1).pid, pick_process([a, b], None).pid, pick_process([], 3)
    (1, 2, None)
    """
    for process in processes:
        if process.pid == pid:
            return process
    for process in processes:
        if process.alive:
            return process
    return processes[0] if processes else None


def pick_statement(statements: Sequence[StatementRow], queryid: int | None) -> StatementRow | None:
    """The selected statement, else the top one.

    >>> s = [StatementRow(1, "a", 1, 1, 1, 1, 1), StatementRow(2, "b", 1, 1, 1, 1, 1)]
    >>> pick_statement(s, 2).queryid, pick_statement(s, 9).queryid, pick_statement([], 1)
    (2, 1, None)
    """
    for statement in statements:
        if statement.queryid == queryid:
            return statement
    return statements[0] if statements else None
