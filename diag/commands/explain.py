"""``archon-diag explain``: one statement's plan (auto_explain, generic or, on request,
EXPLAIN ANALYZE of a validated read-only SELECT) with tips and index advice."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console

from diag.dbanalysis import plan_report
from diag.dbrender import render_explain
from diag.plans import JsonlogPlans, analyze_plan
from diag.sqlsafety import check_plannable
from probes import pgconn
from probes.errors import UsageError
from probes.postgres import StatementSampler, fetch_texts, jsonlog_path
from probes.postgres.sqltext import redact_literals

SCHEMA = "archon-diag.explain/1"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", required=True, help="postgresql://user@host:port/db")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--queryid", type=int, help="a pg_stat_statements queryid")
    which.add_argument("--sql", help="statement text (with $n placeholders or values)")
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="EXPLAIN ANALYZE: executes it (a single SELECT only, read-only, rolled back)",
    )
    parser.add_argument("--format", choices=["term", "json"], default="term")


def run(args: argparse.Namespace) -> int:
    with pgconn.connect(args.dsn) as conn:
        if args.queryid is not None:
            StatementSampler().server(conn)  # one clear line when pg_stat_statements is missing
            found = fetch_texts(conn, [args.queryid])
            if args.queryid not in found:
                raise UsageError(
                    f"queryid {args.queryid} is not in pg_stat_statements of this database "
                    "(see archon-diag db for current queryids)"
                )
            text = found[args.queryid].query
        else:
            text = args.sql
        check_plannable(text)  # refuse DDL / several statements with one line, exit 2
        plan = analyze_plan(conn, text) if args.analyze else None
        jsonlog = None
        if plan is None and args.queryid is not None:
            path = jsonlog_path(conn)
            if path is not None:
                jsonlog = JsonlogPlans(path)
                jsonlog.poll()
        report = plan_report(conn, args.queryid, text, plan=plan, jsonlog=jsonlog)
    if report.plan is None:
        raise UsageError(report.note or "no plan")
    shown = redact_literals(text)
    extra: dict[str, Any] = {"queryid": args.queryid}
    if args.format == "json":
        payload = {"schema": SCHEMA, "query": shown, **extra, **report.to_json()}
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    else:
        render_explain(report, shown, Console(), extra)
    return 0
