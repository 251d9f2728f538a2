"""``archon-diag compare BASE NEW``: what got better or worse between two bundles."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diag.analysis import analyse
from diag.bundle import Bundle
from diag.compare import compare, render_comparison


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base", type=Path, help="baseline bundle")
    parser.add_argument("new", type=Path, help="new bundle")
    parser.add_argument("--format", choices=["term", "md", "json"], default="term")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")


def run(args: argparse.Namespace) -> int:
    comparison = compare(analyse(Bundle(args.base)), analyse(Bundle(args.new)))
    text = render_comparison(comparison, args.format)
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0
