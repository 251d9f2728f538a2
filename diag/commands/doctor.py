"""``archon-diag doctor``: check each prerequisite; exit 0 when every required one passes."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from diag.doctor import FAIL, OK, passed, run_checks
from probes.redact import redact_dsn


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", help="PostgreSQL to check (postgresql://user@host:port/db)")
    parser.add_argument(
        "--target", action="append", default=[], metavar="SPEC", help="a process to check"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    checks = run_checks(args.dsn, args.target)
    ok = passed(checks)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": ok,
                    "dsn": redact_dsn(args.dsn) if args.dsn else None,
                    "checks": [c.to_json() for c in checks],
                }
            )
        )
    else:
        table = Table(show_header=True, header_style="bold", box=None)
        for column in ("", "check", "detail", "fix"):
            table.add_column(column)
        style = {OK: "green", FAIL: "bold red"}
        for c in checks:
            table.add_row(
                f"[{style.get(c.status, 'yellow')}]{c.status}[/]", c.name, c.detail, c.fix
            )
        Console().print(table)
    return 0 if ok else 3
