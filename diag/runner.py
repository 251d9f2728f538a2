"""Build and drive one session for ``run``, ``tui`` and ``demo``: resolve targets, check
prerequisites, open the bundle, run the probes, write every report, apply the gates.

Exit codes (the contract): 0 ok, 1 a ``--fail-on`` gate failed, 2 usage/configuration,
3 a prerequisite is missing. An interrupted run (Ctrl-C, SIGTERM) still writes its
reports from what was collected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diag.analysis import analyse, write_reports
from diag.bundle import Bundle, BundleWriter
from diag.config import RunConfig, from_args
from diag.render import render
from diag.session import LiveSession, ProbeTask, Progress, Session
from probes.errors import DiagError, PrerequisiteError
from probes.targets import Launched, Target, is_launch_spec, launch, resolve


@dataclass
class Prepared:
    config: RunConfig
    targets: list[Target]
    launched: list[Launched] = field(default_factory=list)
    jsonlog: Path | None = None


def resolve_targets(config: RunConfig, log_dir: Path | None = None) -> Prepared:
    targets: list[Target] = []
    launched: list[Launched] = []
    try:
        for spec in config.targets:
            if spec.startswith("scalene:"):
                raise DiagError(
                    "scalene: targets run with `archon-diag profile --target scalene:CMD` "
                    "(scalene must launch the program and owns it for the whole run)"
                )
            if is_launch_spec(spec):
                started = launch(spec, log_path=log_dir / "launched.log" if log_dir else None)
                launched.append(started)
                targets.append(started.target)
            else:
                targets.extend(resolve(spec))
    except BaseException:
        for item in launched:
            item.stop()
        raise
    seen: set[int] = set()
    unique = [t for t in targets if not (t.pid in seen or seen.add(t.pid))]  # type: ignore[func-returns-value]
    return Prepared(config, unique, launched)


def check_prerequisites(prep: Prepared) -> None:
    """Fail fast (exit 3) on what would make the run meaningless."""
    from probes import pgconn
    from probes.postgres import server_info

    cfg = prep.config
    if prep.targets:
        from probes.pyspy import explain_failure, pyspy_path

        pid = prep.targets[0].pid
        proc = subprocess.run(
            [pyspy_path(), "dump", "--pid", str(pid), "--nonblocking"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise PrerequisiteError(explain_failure(proc.stderr or proc.stdout, pid))
    if cfg.dsn:
        from probes.postgres._common import require_pss

        with pgconn.connect(cfg.dsn) as conn:
            require_pss(server_info(conn))


def build_probes(prep: Prepared) -> list[ProbeTask]:
    from diag.session_probes import LoadProbe, MemrayProbe, PostgresProbe, ProcessProbe, PySpyProbe

    cfg = prep.config
    probes: list[ProbeTask] = []
    if cfg.dsn:
        probes.append(PostgresProbe(cfg.dsn, prep.targets, prep.jsonlog))
    if cfg.dsn and cfg.kpis:
        from diag.session_kpi import KpiProbe

        probes.append(KpiProbe(cfg.dsn, cfg.kpis))
    if prep.targets:
        probes.append(ProcessProbe(prep.targets))
        probes.append(PySpyProbe(prep.targets))
        if cfg.memray:
            # one window in the middle of the measured phase
            delay = cfg.warmup + max(0.0, (cfg.duration - cfg.memray_window) / 2)
            probes.append(MemrayProbe(prep.targets, delay))
    if not cfg.no_load:
        probes.append(LoadProbe())
    return probes


def open_bundle(prep: Prepared, command: str, extra: dict[str, Any] | None = None) -> BundleWriter:
    return BundleWriter.create(
        prep.config.out,
        {
            "command": command,
            "options": prep.config.to_json(),
            "targets": [t.to_json() for t in prep.targets],
            **(extra or {}),
        },
    )


def _install_signals(session: Session) -> Callable[[], None]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, session.request_stop, "interrupted")

    def remove() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    return remove


async def _headless(session: Session) -> Path:
    remove = _install_signals(session)
    try:
        return await session.run()
    finally:
        remove()


def finish(
    bundle_path: Path, config: RunConfig, *, print_report: bool = True, stream: Any = None
) -> int:
    """Write every report into the bundle, print the terminal one, return the exit code."""
    # the final analysis reads every capture (seconds each): say so, after a TUI has gone
    print(f"archon-diag: analysing {bundle_path} and writing its reports …", file=sys.stderr)
    baseline = analyse(Bundle(config.baseline)) if config.baseline else None
    bundle = Bundle(bundle_path)
    written = write_reports(bundle, bundle_path, fail_on=config.fail_on, baseline=baseline)
    import json

    from diag.report import Report

    report = Report.from_json(json.loads(written["json"].read_text()))
    out = stream or sys.stdout
    if print_report:
        color = out.isatty() if hasattr(out, "isatty") else False
        out.write(render(report, "term", color=color))
    print(
        f"bundle: {bundle_path}  (reports: {', '.join(p.name for p in written.values())})",
        file=sys.stderr,
    )
    return 0 if report.gates_passed else 1


def run_session(
    prep: Prepared,
    command: str,
    *,
    tui: bool = False,
    extra: dict[str, Any] | None = None,
) -> int:
    """Run a prepared session headless (progress on stderr) or under the TUI."""
    bundle = open_bundle(prep, command, extra)
    probes = build_probes(prep)
    try:
        if tui:
            session = Session(prep.config, bundle, prep.targets, probes)
            from tui.app import run_app

            with _stderr_to(bundle.path / "stderr.log"):
                live = LiveSession(session).start()
                run_app(live, title=f"archon-diag {command}")
                live.close()
            path = bundle.path
        else:
            session = Session(prep.config, bundle, prep.targets, probes, Progress())
            print(
                f"archon-diag {command}: bundle {bundle.path}; warm-up "
                f"{prep.config.warmup:.0f}s, measuring {prep.config.duration:.0f}s "
                "(Ctrl-C stops early and keeps what was collected)",
                file=sys.stderr,
            )
            path = asyncio.run(_headless(session))
    finally:
        for item in prep.launched:
            item.stop()
    return finish(path, prep.config, print_report=True)


@contextlib.contextmanager
def _stderr_to(log: Path) -> Iterator[None]:
    """While the TUI owns the terminal, whatever writes to file descriptor 2 directly (C
    libraries such as memray's reader, child processes) goes to ``log``; the TUI itself
    (Textual draws on ``sys.__stderr__``) keeps a private handle on the terminal."""
    saved_fd = os.dup(2)
    terminal = os.fdopen(os.dup(2), "w", buffering=1)
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = (sys.stderr, sys.__stderr__)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stderr = sys.__stderr__ = terminal  # type: ignore[misc]
    try:
        yield
    finally:
        sys.stderr, sys.__stderr__ = saved  # type: ignore[misc]
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        terminal.close()


def run_from_args(args: argparse.Namespace, command: str, *, tui: bool | None) -> int:
    """``run`` / ``tui``: configuration, targets, prerequisites, then the session.
    ``tui=None``: the dashboard when on a terminal and not ``--headless``."""
    config = from_args(args)
    prep = resolve_targets(config)
    try:
        check_prerequisites(prep)
    except BaseException:
        for item in prep.launched:
            item.stop()
        raise
    if tui is None:
        tui = not config.headless and interactive() and _has_tui()
    return run_session(prep, command, tui=tui)


def _has_tui() -> bool:
    try:
        import tui.app  # noqa: F401
    except ImportError:
        return False
    return True


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty() and os.environ.get("TERM") != "dumb"
