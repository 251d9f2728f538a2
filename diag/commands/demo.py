"""``archon-diag demo``: the full diagnosis of the built-in Archon stand-in.

Starts the embedded PostgreSQL and the stand-in (server + agents) with the chosen faults,
drives the Archon scenario against it while every probe watches (and the Archon KPI
preset samples the agent-job queue), then writes the bundle and every report. On a
terminal it opens the TUI; ``--headless`` prints the report.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from diag.bundle import check_new_out
from diag.config import RunConfig
from diag.kpi import preset_kpis
from diag.runner import Prepared, interactive, run_session
from diag.units import duration_arg
from probes.targets import Target, resolve


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--headless", action="store_true", help="no TUI; print the report")
    parser.add_argument(
        "--duration", type=duration_arg, default=60.0, help="measured window (default 60s)"
    )
    parser.add_argument(
        "--warmup", type=duration_arg, default=10.0, help="warm-up before measuring (default 10s)"
    )
    parser.add_argument("--faults", default="all", help="all|none|a,b (default all)")
    # 24, not 16: on a faster machine 16 users kept only 1.6-2.7 requests in flight, at the
    # knee for the starved pool of 2 (its finding came and went); 24 gave 7 (2026-12-04)
    parser.add_argument("--users", type=int, default=24, help="concurrent users (default 24)")
    parser.add_argument("--out", type=Path, default=None, help="bundle directory")
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="stand-in state directory (default /var/tmp/archon-diag-$UID/demo)",
    )
    parser.add_argument(
        "--fail-on", action="append", default=[], metavar="EXPR", help="gates, as for run"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the stand-in running afterwards (stop: demo-target down)",
    )


def run(args: argparse.Namespace) -> int:
    from diag.demo import stack
    from diag.demo.faults import parse_faults, to_spec

    faults = to_spec(parse_faults(args.faults))
    if args.out is not None:
        check_new_out(args.out)  # before the stand-in's seconds of start-up, not after
    running = stack.status(args.dir)
    if running is not None and set(running.faults) != set(parse_faults(args.faults)):
        stack.down(args.dir)
        running = None
    # a stand-in that was already running (demo-target up, another demo) is left running
    started_here = running is None
    print(f"archon-diag demo: starting the Archon stand-in (faults: {faults}) ...", file=sys.stderr)
    ports: dict[str, int] = {}
    if running is None:  # the contract's default ports, or free ones when they are taken
        from diag.pgembed import free_port, port_free

        for name, port in (("server_port", 8181), ("agents_port", 8052)):
            ports[name] = port if port_free(port) else free_port()
    target = stack.up(
        args.dir,
        faults=faults,
        server_port=ports.get("server_port"),
        agents_port=ports.get("agents_port"),
    )
    try:
        targets: list[Target] = []
        for role, pid in (
            ("archon-server", target.pids["server"]),
            ("archon-agents", target.pids["agents"]),
        ):
            targets.extend(
                dataclasses.replace(t, role=role, spec=f"demo:{role}") for t in resolve(str(pid))
            )
        config = RunConfig(
            targets=tuple(str(t.pid) for t in targets),
            dsn=target.dsn,
            host=target.server_url,
            agents_host=target.agents_url,
            scenario="archon",
            users=args.users,
            spawn_rate=max(1.0, args.users / 2),
            duration=args.duration,
            warmup=args.warmup,
            out=args.out,
            headless=args.headless,
            fail_on=tuple(args.fail_on),
            faults=faults,
            kpis=preset_kpis("archon"),  # the agent-job queue KPIs of the stand-in
        ).validate()
        prep = Prepared(config, targets)
        use_tui = not args.headless and interactive()
        return run_session(prep, "demo", tui=use_tui, extra={"demo": {"faults": faults}})
    finally:
        if started_here and not args.keep:
            stack.down(args.dir)
