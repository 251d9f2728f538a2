"""``archon-diag demo``: the full diagnosis against the built-in Archon stand-in.

Until the session exists (issue 7) this starts the embedded PostgreSQL, prints its
status and stops it again, so ``make demo`` proves the foundation works end to end.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from diag import pgembed
from diag.doctor import FAIL, run_checks


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--headless", action="store_true", help="no TUI; print the report")
    parser.add_argument("--duration", default="60s", help="measured window (default 60s)")
    parser.add_argument("--faults", default="all", help="all|none|a,b (default all)")
    parser.add_argument("--out", type=Path, default=None, help="bundle directory")


def run(args: argparse.Namespace) -> int:
    base = Path(tempfile.mkdtemp(prefix="archon-diag-demo-pg-", dir="/var/tmp"))
    print(f"starting the embedded PostgreSQL in {base} ...")
    try:
        info = pgembed.up(base)
        print(f"running: PostgreSQL {info.version} (pid {info.pid}) at {info.dsn}")
        for check in run_checks(info.dsn, []):
            mark = "!!" if check.status == FAIL else "  "
            print(f"{mark}{check.status:5} {check.name}: {check.detail}")
    finally:
        pgembed.down(base, purge=True)
        print("stopped and removed the demo cluster")
    return 0
