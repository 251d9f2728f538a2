"""``archon-diag run``: one session — load + profilers + database probes — one report."""

from __future__ import annotations

import argparse

from diag.config import add_run_options, from_args
from diag.runner import check_prerequisites, interactive, resolve_targets, run_session


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
    return run_session(prep, "run", tui=not config.headless and interactive() and _has_tui())


def _has_tui() -> bool:
    try:
        import tui.app  # noqa: F401
    except ImportError:
        return False
    return True
