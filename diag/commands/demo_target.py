"""``archon-diag demo-target up|down|status``: the Archon stand-in (PostgreSQL + services).

``up`` starts the embedded PostgreSQL, seeds the ``archon`` database once, and starts the
server and agents service as detached processes; ``--json`` prints the contract's object
``{"dsn", "server_url", "agents_url", "pids": {"server", "agents"}}``. ``down`` stops
everything ``up`` started.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diag.demo import faults as demo_faults
from diag.demo import seed, stack
from diag.demo.seed import Sizes
from probes.errors import UsageError
from probes.redact import redact_dsn


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "--faults",
        default=None,
        help=f"all|none|a,b of {', '.join(demo_faults.names())} "
        f"(default ${demo_faults.ENV_VAR} or all)",
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help=f"state directory (default {stack.default_dir()})"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--server-port", type=int, default=stack.DEFAULT_SERVER_PORT, help="default 8181"
    )
    parser.add_argument(
        "--agents-port", type=int, default=stack.DEFAULT_AGENTS_PORT, help="default 8052"
    )
    parser.add_argument(
        "--dsn", default=None, help="use this PostgreSQL server instead of the embedded one"
    )
    parser.add_argument(
        "--dbname", default=seed.DEFAULT_DBNAME, help="database created for the stand-in"
    )
    parser.add_argument("--size", choices=["default", "small"], default="default", help="seed size")
    parser.add_argument(
        "--llm-429-rate", type=float, default=0.05, help="share of LLM calls answered 429"
    )


def run(args: argparse.Namespace) -> int:
    if args.action == "up":
        for port in (args.server_port, args.agents_port):
            if not 1 <= port <= 65535:
                raise UsageError(f"port {port} is out of range 1-65535")
        if not 0 <= args.llm_429_rate <= 1:
            raise UsageError("--llm-429-rate must be between 0 and 1")
        target = stack.up(
            args.dir,
            faults=args.faults,
            server_port=args.server_port,
            agents_port=args.agents_port,
            dsn=args.dsn,
            dbname=args.dbname,
            sizes=Sizes.small() if args.size == "small" else Sizes(),
            llm_429_rate=args.llm_429_rate,
        )
        if args.json:
            print(json.dumps(target.to_json()))
        else:
            _print_target(target, "running")
        return 0
    if args.action == "status":
        found = stack.status(args.dir)
        if args.json:
            print(json.dumps(found.to_json() if found else {"running": False}))
        elif found is None:
            print(f"not running (start it with: archon-diag demo-target up); dir={_dir(args)}")
        else:
            _print_target(found, "running")
        return 0 if found is not None else 3
    stopped = stack.down(args.dir)
    if args.json:
        print(json.dumps({"stopped": stopped}))
    else:
        print("stopped" if stopped else "not running")
    return 0


def _dir(args: argparse.Namespace) -> Path:
    return Path(args.dir) if args.dir else stack.default_dir()


def _print_target(target: stack.DemoTarget, state: str) -> None:
    print(
        f"{state}: server {target.server_url} (pid {target.pids['server']}), "
        f"agents {target.agents_url} (pid {target.pids['agents']})"
    )
    print(f"database: {redact_dsn(target.dsn)}")
    print(f"faults: {demo_faults.to_spec(target.faults)}")
    if target.seeded_now:
        print(f"seeded in {target.seed_seconds:.1f}s")
