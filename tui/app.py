"""The live dashboard: a Textual app that renders a ``diag.live.LiveSource`` and nothing else.

A worker thread calls ``source.snapshot()`` about once a second and posts the result to
the UI; actions go through ``source.act()`` on another worker thread, so a slow session
never stalls the screen. ``q`` calls ``source.close()`` (off the UI thread) and exits.
The app does no analysis: findings, ranks and verdicts come from the snapshot as they are.

Entry point for ``archon-diag tui`` / ``archon-diag demo``::

    from tui.app import run_app
    exit_code = run_app(session)   # session: any diag.live.LiveSource
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import ContentSwitcher, Static

from diag.live import Action, LiveSnapshot, LiveSource
from tui import keys, render
from tui.screens import PANES, HelpScreen, Pane, Selection


class SnapshotReady(Message):
    """Posted by the poll worker: a new snapshot, or the error that replaced it."""

    def __init__(self, snapshot: LiveSnapshot | None, error: str = "") -> None:
        super().__init__()
        self.snapshot = snapshot
        self.error = error


class ActionDone(Message):
    """Posted by the action worker with the source's one-line answer."""

    def __init__(self, reply: str) -> None:
        super().__init__()
        self.reply = reply


class SourceClosed(Message):
    def __init__(self, error: BaseException | None) -> None:
        super().__init__()
        self.error = error


def _screen_bindings() -> list[BindingType]:
    return [
        Binding(digit, f"show_pane('{screen}')", title, show=False)
        for screen, digit, title in keys.SCREENS
    ]


class DiagApp(App[int]):
    """The dashboard. ``refresh_s=None`` polls once at start only (tests call ``poll()``)."""

    CSS_PATH = "app.tcss"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        *_screen_bindings(),
        Binding("right_square_bracket", "cycle(1)", "next screen", show=False),
        Binding("left_square_bracket", "cycle(-1)", "previous screen", show=False),
        Binding("s", "stop_start", "stop/start load", show=False),
        Binding("p", "pause", "pause/resume load", show=False),
        Binding("plus,equals_sign", "users(1)", "more users", show=False),
        Binding("minus,underscore", "users(-1)", "fewer users", show=False),
        Binding("a", "profiler", "attach/detach py-spy", show=False),
        Binding("w", "memray", "memray window", show=False),
        Binding("e", "explain", "EXPLAIN statement", show=False),
        Binding("r", "save", "save report", show=False),
        Binding("question_mark", "help", "help", show=False),
        Binding("ctrl+l", "redraw", "redraw the screen", show=False),
        Binding("q", "quit", "quit", show=False),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
    ]

    def __init__(
        self,
        source: LiveSource,
        *,
        title: str = "archon-diag",
        refresh_s: float | None = 1.0,
    ) -> None:
        super().__init__()
        self.source = source
        self.title = title
        self.refresh_s = refresh_s
        self.selection = Selection()
        self.snapshot: LiveSnapshot | None = None
        self.current = "overview"
        self.snapshots_applied = 0
        self.replies: list[str] = []
        self.closed = False
        self.close_error: BaseException | None = None
        self._polling = False
        self._quitting = False
        self._users_pending: int | None = None
        self._reply = ""
        self._reply_seen: tuple[str, ...] = ()  # the notices there were when it came
        self.ui_loop: asyncio.AbstractEventLoop | None = None

    # ---- layout ------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(render.tab_bar(self.current), id="tabs")
        with ContentSwitcher(initial=self.current, id="screens"):
            for name, pane in PANES.items():
                yield pane(self.selection, id=name)
        yield Static("", id="message")
        yield Static(render.status_line(None, 80), id="status")
        yield Static(render.keys_line(80), id="keys")

    def on_mount(self) -> None:
        self.ui_loop = asyncio.get_running_loop()
        self.query_one("#keys", Static).update(render.keys_line(self.size.width))
        self._pane(self.current).focus_main()
        self.poll()
        if self.refresh_s:
            self.set_interval(self.refresh_s, self.poll)

    def _pane(self, name: str) -> Pane:
        return self.query_one(f"#{name}", Pane)

    # ---- data in -----------------------------------------------------------------------

    def poll(self) -> None:
        """Ask for a snapshot unless one is already on its way (never queue up polls)."""
        if self._polling or self._quitting:
            return
        self._polling = True
        self._fetch()

    @work(thread=True, group="poll")
    def _fetch(self) -> None:
        try:
            snap: LiveSnapshot | None = self.source.snapshot()
            error = ""
        except Exception as exc:  # a failing source must not take the screen down
            snap, error = None, f"snapshot failed: {type(exc).__name__}: {exc}"
        self.post_message(SnapshotReady(snap, error))

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        self._polling = False
        if message.snapshot is None:
            self._set_reply(message.error)
            return
        snap = message.snapshot
        self.snapshot = snap
        self.snapshots_applied += 1
        if self.snapshots_applied % FORGET_WIDTHS_EVERY == 0:
            forget_cell_widths()
        last_users = snap.load[-1].users if snap.load else None
        if last_users == self._users_pending or snap.load_state in ("stopped", "off"):
            self._users_pending = None
        self._render_all(snap)

    def _render_all(self, snap: LiveSnapshot) -> None:
        width = self.size.width
        self.query_one("#status", Static).update(render.status_line(snap, width))
        self.query_one("#message", Static).update(
            render.message_line(snap.messages, self._reply, width, self._reply_seen)
        )
        self._pane(self.current).show(snap)

    # ---- screens -----------------------------------------------------------------------

    def action_show_pane(self, name: str) -> None:
        if name not in PANES:
            return
        self.current = name
        self.query_one("#screens", ContentSwitcher).current = name
        self.query_one("#tabs", Static).update(render.tab_bar(name))
        pane = self._pane(name)
        if self.snapshot is not None:
            pane.show(self.snapshot)
        pane.focus_main()

    def action_cycle(self, step: int) -> None:
        self.action_show_pane(keys.cycle_screen(self.current, step))

    def action_redraw(self) -> None:
        """Repaint every cell: another process (a target's stderr) may have written over us."""
        self.screen.refresh(self.screen.region)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
        else:
            self.push_screen(HelpScreen())

    # ---- actions out -------------------------------------------------------------------

    def send(self, action: Action | None, why_not: str) -> None:
        """Send an action off the UI thread, or say why there is nothing to send."""
        if action is None:
            self._set_reply(why_not)
            return
        self._set_reply(f"{type(action).__name__} …")
        self._act(action)

    @work(thread=True, group="act")
    def _act(self, action: Action) -> None:
        try:
            reply = self.source.act(action)
        except Exception as exc:
            reply = f"{type(action).__name__} failed: {type(exc).__name__}: {exc}"
        self.post_message(ActionDone(reply))

    def on_action_done(self, message: ActionDone) -> None:
        self.replies.append(message.reply)
        self._set_reply(message.reply)

    def _set_reply(self, text: str) -> None:
        messages = self.snapshot.messages if self.snapshot else ()
        self._reply, self._reply_seen = text, tuple(messages)
        self.query_one("#message", Static).update(
            render.message_line(messages, text, self.size.width, messages)
        )

    def _load_state(self) -> str:
        return self.snapshot.load_state if self.snapshot else "off"

    def action_stop_start(self) -> None:
        self.send(keys.stop_or_start(self._load_state()), "no load in this session")

    def action_pause(self) -> None:
        self.send(keys.pause_or_resume(self._load_state()), "the load is not running")

    def action_users(self, direction: int) -> None:
        snap = self.snapshot
        if snap is None or snap.load_state in ("off", "stopped") or not snap.load:
            self.send(None, "the load is not running")
            return
        action = keys.change_users(snap.load[-1].users, self._users_pending, direction)
        if action is not None:
            self._users_pending = action.users
        self.send(action, "already at one user")

    def _process(self) -> Any:
        processes = self.snapshot.processes if self.snapshot else ()
        process = keys.pick_process(processes, self.selection.pid)
        if process is not None:
            self.selection.pid = process.pid
        return process

    def action_profiler(self) -> None:
        self.send(keys.toggle_profiler(self._process()), "no live process selected")

    def action_memray(self) -> None:
        self.send(
            keys.memray_window(self._process()),
            "no live process selected, or a memray window is already running",
        )

    def action_explain(self) -> None:
        statements = self.snapshot.statements if self.snapshot else ()
        statement = keys.pick_statement(statements, self.selection.queryid)
        if statement is not None:
            self.selection.queryid = statement.queryid
        self.send(keys.explain(statement), "no statement to explain yet")

    def action_save(self) -> None:
        from diag.live import SaveReport

        self.send(SaveReport(), "")

    # ---- quitting ----------------------------------------------------------------------

    async def action_quit(self) -> None:
        """Stop everything the session started (off the UI thread), then exit."""
        if self._quitting:
            return
        self._quitting = True
        self._set_reply("stopping everything the session started …")
        self._close()

    @work(thread=True, group="close")
    def _close(self) -> None:
        error: BaseException | None = None
        try:
            self.source.close()
        except Exception as exc:
            error = exc
        self.post_message(SourceClosed(error))

    def on_source_closed(self, message: SourceClosed) -> None:
        self.closed = True
        self.close_error = message.error
        self.exit(0)


class _TerminalGuard:
    """The file Textual draws on, safe against a terminal that went away without a SIGHUP
    (a pty whose other end was closed, an SSH session without a controlling terminal).

    Writes to such a terminal fail with EIO: Textual's writer thread would die of it, its
    queue of 30 writes fill, and the UI loop block on the next write, deaf to SIGTERM, while
    the input thread spins on end-of-file. Here the first failed write quits instead, by
    the same path as SIGHUP; later writes are dropped."""

    def __init__(self, file: Any, on_lost: Callable[[], None]) -> None:
        self._file = file
        self._on_lost = on_lost
        self.lost = False

    def _lose(self) -> None:
        if not self.lost:
            self.lost = True
            self._on_lost()

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                return int(self._file.write(text))
            except OSError:
                self._lose()
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self._file.flush()
            except OSError:
                self._lose()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, ...
        return getattr(self._file, name)


@contextmanager
def _quit_on_hangup(app: DiagApp) -> Iterator[None]:
    """SIGHUP (the SSH session went away), SIGTERM and a terminal that stopped accepting
    output all quit through the same clean path."""
    import sys

    previous: dict[signal.Signals, Any] = {}

    def quit_soon() -> None:
        loop = app.ui_loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(app.call_later, app.action_quit)

    def handler(_signum: int, _frame: FrameType | None) -> None:
        # a signal handler may interrupt the loop anywhere: hand over thread-safely
        quit_soon()

    def lost() -> None:
        # the input thread would spin on end-of-file until the close is done: end it
        exit_event = getattr(getattr(app, "_driver", None), "exit_event", None)
        if exit_event is not None:
            exit_event.set()
        quit_soon()

    for sig in (signal.SIGHUP, signal.SIGTERM):
        with suppress(ValueError):  # not the main thread: leave signals alone
            previous[sig] = signal.signal(sig, handler)
    terminal = sys.__stderr__
    sys.__stderr__ = _TerminalGuard(terminal, lost)  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        sys.__stderr__ = terminal  # type: ignore[misc]
        for sig, old in previous.items():
            signal.signal(sig, old)


FORGET_WIDTHS_EVERY = 60  # snapshots: about a minute


def forget_cell_widths() -> None:
    """Empty rich's cache of the cell widths of the last 4,096 strings drawn (those under
    512 characters). A live dashboard draws new strings every second, one per changing
    line, so the cache filled for the first several minutes of a session with text never
    drawn again (about 9 strings a second in the demo, many of them whole blocks). The
    widths of ASCII text cost next to nothing to measure again."""
    import rich.cells

    clear = getattr(getattr(rich.cells, "cached_cell_len", None), "cache_clear", None)
    if callable(clear):
        clear()


def run_app(
    source: LiveSource,
    *,
    title: str = "archon-diag",
    refresh_s: float = 1.0,
    app_factory: Callable[..., DiagApp] = DiagApp,
) -> int:
    """Show the dashboard over ``source`` until the user quits; return the exit code (0).

    ``source.close()`` is always called exactly once: by ``q`` (before the app exits) or
    here if the app ended another way (a crash, an interrupt). An exception raised by
    ``close()`` is re-raised after the terminal is restored.
    """
    app = app_factory(source, title=title, refresh_s=refresh_s)
    try:
        with _quit_on_hangup(app):
            app.run()
    finally:
        if not app.closed:
            app.closed = True
            source.close()
    if app.close_error is not None:
        raise app.close_error
    return int(app.return_code or 0)
