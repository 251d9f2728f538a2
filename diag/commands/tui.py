"""``archon-diag tui``: the live dashboard over a session (same options as ``run``)."""

from __future__ import annotations

import argparse

from diag.config import add_run_options
from diag.runner import run_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    add_run_options(parser)


def run(args: argparse.Namespace) -> int:
    return run_from_args(args, "tui", tui=True)
