"""``archon-diag run``: one session — load + profilers + database probes — one report.

On a terminal without ``--headless`` it opens the live dashboard, like ``tui``."""

from __future__ import annotations

import argparse

from diag.config import add_run_options
from diag.runner import run_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    add_run_options(parser)


def run(args: argparse.Namespace) -> int:
    return run_from_args(args, "run", tui=None)
