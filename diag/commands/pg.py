"""``archon-diag pg up|down|status``: the embedded throwaway PostgreSQL."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diag import pgembed


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"cluster directory (default {pgembed.default_dir()})",
    )
    parser.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: free)")
    parser.add_argument("--purge", action="store_true", help="with down: delete the cluster")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    if args.action == "up":
        info = pgembed.up(args.dir, args.port)
        if args.json:
            print(json.dumps(info.to_json()))
        else:
            print(info.dsn)
        return 0
    if args.action == "status":
        status = pgembed.status(args.dir)
        if args.json:
            print(json.dumps(status.to_json() if status else {"exists": False}))
        elif status is None:
            print(f"no cluster in {args.dir or pgembed.default_dir()} (create one with: pg up)")
        else:
            state = f"running (pid {status.pid})" if status.running else "stopped"
            print(f"{state}  PostgreSQL {status.version}  {status.dsn}  dir={status.dir}")
        # 3 = "prerequisite missing" in the contract: no server to talk to
        return 0 if status is not None and status.running else 3
    was_running = pgembed.down(args.dir, purge=args.purge)
    where = args.dir or pgembed.default_dir()
    print(
        ("stopped" if was_running else "not running") + (f"; purged {where}" if args.purge else "")
    )
    return 0
