"""``archon-diag db``: database only — statement deltas over a window, active-session
sampling, health, plans and index advice, as ranked findings."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from diag.dbanalysis import DbThresholds, diagnose
from diag.dbrender import render_db
from diag.plans import JsonlogPlans
from diag.units import duration_arg
from probes import pgconn
from probes.errors import UsageError
from probes.postgres import WindowCollector, jsonlog_path
from probes.postgres.statements import StatementSnapshot
from probes.postgres.window import WindowData
from probes.redact import redact_dsn


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", required=True, help="postgresql://user@host:port/db")
    parser.add_argument(
        "--window",
        type=duration_arg,
        default=30.0,
        metavar="D",
        help="how long to watch (default 30s; 0 = counters since the last statistics reset)",
    )
    parser.add_argument(
        "--interval",
        type=duration_arg,
        default=0.2,
        metavar="D",
        help="active-session sampling interval (default 200ms)",
    )
    parser.add_argument("--format", choices=["term", "json"], default="term")
    parser.add_argument("-o", "--output", type=Path, metavar="FILE", help="write here")
    parser.add_argument(
        "--jsonlog",
        type=Path,
        metavar="PATH",
        help="the server's jsonlog with auto_explain plans (default: asked from the server)",
    )
    parser.add_argument(
        "--requests",
        type=Path,
        metavar="FILE",
        help='JSON {"GET /endpoint": requests in the window} for N+1 detection',
    )
    parser.add_argument("--all-databases", action="store_true", help="statements of every db")
    parser.add_argument("--no-health", action="store_true", help="skip the health checks")


def _request_counts(path: Path | None) -> dict[str, int] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
        return {str(k): int(v) for k, v in dict(data).items()}
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(
            f"--requests {path}: expected a JSON object of endpoint -> count ({exc})"
        ) from None


def collect(
    dsn: str, window_s: float, interval_s: float, *, all_databases: bool = False
) -> WindowData:
    """Watch the database for ``window_s`` seconds (0: since the statistics reset)."""
    collector = WindowCollector(
        dsn,
        sample_interval_s=interval_s,
        snapshot_interval_s=max(window_s / 10, 1.0),
        all_databases=all_databases,
    )
    first = collector.start()
    if window_s <= 0:
        data = collector.stop()
        last = data.snapshots[-1]
        since = first.stats_reset or (last.taken_at - 1.0)
        empty = StatementSnapshot(
            taken_at=since,
            cost_ms=0.0,
            server_version_num=last.server_version_num,
            pss_version=last.pss_version,
            statements=(),
        )
        return WindowData(
            snapshots=(empty, last),
            samples=data.samples,
            notes=("window 0: counters since the last statistics reset",),
        )
    try:
        collector.run_for(window_s)
    except BaseException:
        collector.link.close()
        raise
    return collector.stop()


def run(args: argparse.Namespace) -> int:
    if args.window < 0:
        raise UsageError("--window must be 0 or more")
    if not 0.01 <= args.interval <= 10:
        raise UsageError("--interval must be between 10ms and 10s")
    requests = _request_counts(args.requests)
    dsn_shown = redact_dsn(args.dsn)
    data = collect(args.dsn, args.window, args.interval, all_databases=args.all_databases)
    with pgconn.connect(args.dsn) as conn:
        path = args.jsonlog or jsonlog_path(conn)
        jsonlog = JsonlogPlans(path) if path is not None and path.is_file() else None
        report = diagnose(
            conn,
            data,
            dsn_redacted=dsn_shown,
            jsonlog=jsonlog,
            request_counts=requests,
            with_health=not args.no_health,
            thresholds=DbThresholds(),
        )
    if args.format == "json":
        payload: dict[str, Any] = report.to_json()
        text = json.dumps(payload, indent=2, default=str) + "\n"
        if args.output:
            args.output.write_text(text)
        else:
            sys.stdout.write(text)
        return 0
    if args.output:
        with args.output.open("w") as fh:
            render_db(report, Console(file=fh, width=120, no_color=True))
    else:
        render_db(report, Console())
    return 0
