"""``archon-diag report BUNDLE``: re-render a run bundle offline (complete or killed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diag.analysis import analyse
from diag.bundle import Bundle
from diag.gates import evaluate_all
from diag.render import FORMATS, render


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="a run directory (runs/<timestamp>)")
    parser.add_argument("--format", choices=FORMATS, default="term")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    parser.add_argument(
        "--fail-on",
        action="append",
        default=[],
        metavar="EXPR",
        help="gates to evaluate (exit 1 when one fails)",
    )
    parser.add_argument("--baseline", type=Path, help="bundle for regression gates")


def run(args: argparse.Namespace) -> int:
    report = analyse(Bundle(args.bundle))
    baseline = analyse(Bundle(args.baseline)) if args.baseline else None
    gate_exprs = args.fail_on or list(report.run.get("fail_on") or [])
    if gate_exprs:
        report = report.with_gates(evaluate_all(gate_exprs, report, baseline))
    text = render(report, args.format, color=args.output is None and sys.stdout.isatty())
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0 if report.gates_passed else 1
