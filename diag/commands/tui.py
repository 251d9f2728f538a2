"""``archon-diag tui``: the live dashboard over a session (same options as ``run``)."""

from __future__ import annotations

import argparse

from diag.config import add_run_options, from_args
from diag.runner import check_prerequisites, resolve_targets, run_session


def configure(parser: argparse.ArgumentParser) -> None:
    add_run_options(parser)


def run(args: argparse.Namespace) -> int:
    config = from_args(args)
    prep = resolve_targets(config)
    try:
        check_prerequisites(prep)
    except BaseException:
        for item in prep.launched:
            item.stop()
        raise
    return run_session(prep, "tui", tui=True)
