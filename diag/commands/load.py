"""``archon-diag load``: background Locust load only — a live line, then the final figures.

Locust runs as a subprocess (``probes.locust``); this command shows a compact live line on
a terminal (stderr), writes every record to ``--jsonl`` when asked, and prints the final
per-endpoint table, the stages (with the stress knee or the spike recovery) and the load
findings. Ctrl-C stops Locust cleanly and still prints its final stats.

Exit codes: 0 the load ran (failed requests are counted, not fatal); 2 bad options or a
locustfile that does not load; 3 locust missing, or every request refused (nothing is
listening at --host).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from diag.findings import rank
from diag.load import analyse, endpoint_table, live_line, stage_table
from diag.units import duration_arg, format_duration
from probes.errors import PrerequisiteError, UsageError
from probes.loadshapes import SHAPES, Limits, ShapePlan, plan
from probes.locust import (
    DEFAULT_AGENTS_HOST,
    DEFAULT_HOST,
    LoadSpec,
    LoadTick,
    LocustRun,
    worker_command,
)

_PLAIN_EVERY_S = 10  # live line cadence when stderr is not a terminal


def _percent(text: str) -> float:
    value = text.strip()
    try:
        number = float(value.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid rate {text!r}: use e.g. 1% or 0.01") from None
    return number / 100 if value.endswith("%") or number > 1 else number


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"base URL (default {DEFAULT_HOST})")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--scenario", choices=["archon"], default=None,
        help="the shipped scenario: users that behave like the Archon UI (default)",
    )  # fmt: skip
    source.add_argument("--locustfile", type=Path, help="your own locustfile instead")
    parser.add_argument(
        "--agents-host", default=DEFAULT_AGENTS_HOST,
        help=f"Archon scenario: agents service URL, '' to skip (default {DEFAULT_AGENTS_HOST})",
    )  # fmt: skip
    parser.add_argument("--users", type=_positive_int, default=10, help="peak users (default 10)")
    parser.add_argument("--spawn-rate", type=float, default=None, help="users started per second")
    parser.add_argument("--shape", choices=SHAPES, default="load", help="load shape (default load)")
    parser.add_argument(
        "--duration", type=duration_arg, default=60.0, help="run length (default 60s)"
    )
    parser.add_argument("--steps", type=_positive_int, default=None, help="step/stress: steps (5)")
    parser.add_argument(
        "--max-p95", type=duration_arg, default=1.0, help="stress: p95 limit (default 1000ms)"
    )
    parser.add_argument(
        "--max-error-rate", type=_percent, default=0.01, help="stress: error limit (default 1%%)"
    )
    parser.add_argument(
        "--baseline-users", type=int, default=None, help="spike: users before/after the burst"
    )
    parser.add_argument("--processes", type=_positive_int, default=None,
                        help="Locust worker processes on this host")  # fmt: skip
    parser.add_argument(
        "--expect-workers", type=_positive_int, default=None,
        help="master mode: wait for N workers started elsewhere (prints their command)",
    )  # fmt: skip
    parser.add_argument(
        "--master-bind-host", default="127.0.0.1",
        help="master mode: interface workers connect to (default 127.0.0.1; the link is "
        "unauthenticated: private networks only)",
    )  # fmt: skip
    parser.add_argument("--master-port", type=int, default=None, help="master mode port (5557)")
    parser.add_argument("--jsonl", type=Path, default=None, help="write every record here")
    parser.add_argument(
        "--out", type=Path, default=None, help="directory for Locust's log and stats JSON"
    )
    parser.add_argument(
        "--prune-after", type=duration_arg, default=300.0,
        help="drop Locust's per-second counters older than this (default 5m)",
    )  # fmt: skip


def plan_from_args(args: argparse.Namespace) -> ShapePlan:
    try:
        return plan(
            args.shape,
            users=args.users,
            duration_s=args.duration,
            spawn_rate=args.spawn_rate,
            steps=args.steps,
            limits=Limits(max_error_rate=args.max_error_rate, max_p95_ms=args.max_p95 * 1000),
            baseline_users=args.baseline_users,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def spec_from_args(args: argparse.Namespace) -> LoadSpec:
    if not str(args.host).startswith(("http://", "https://")):
        raise UsageError(f"--host {args.host!r} is not a URL: use e.g. {DEFAULT_HOST}")
    if args.processes and args.expect_workers:
        raise UsageError("use --processes (this host) or --expect-workers (other hosts), not both")
    if args.spawn_rate is not None and args.spawn_rate <= 0:
        raise UsageError("--spawn-rate must be positive")
    return LoadSpec(
        plan=plan_from_args(args),
        host=str(args.host).rstrip("/"),
        locustfile=args.locustfile,
        agents_host=(args.agents_host or "").rstrip("/") or None,
        processes=args.processes,
        expect_workers=args.expect_workers,
        master_bind_host=args.master_bind_host,
        master_port=args.master_port,
        prune_after_s=args.prune_after,
    )


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    out = args.out or Path(tempfile.mkdtemp(prefix="archon-diag-load-"))
    return asyncio.run(_main(spec, out, args.jsonl, keep_out=args.out is not None))


class _Live:
    """The live line: rewritten in place on a terminal, a plain line now and then in logs."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.shown = False

    def show(self, tick: LoadTick) -> None:
        line = live_line(tick)
        if self.tty:
            width = shutil.get_terminal_size((100, 24)).columns - 1
            self.stream.write("\r" + line[:width].ljust(width))
            self.shown = True
        elif int(tick.elapsed) % _PLAIN_EVERY_S == 0:
            self.stream.write(line + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()


async def _main(spec: LoadSpec, out: Path, jsonl_path: Path | None, keep_out: bool) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    jsonl: IO[str] | None = None
    runner = LocustRun(spec, out)
    live = _Live(sys.stderr)
    try:
        if jsonl_path is not None:
            try:
                jsonl_path.parent.mkdir(parents=True, exist_ok=True)
                jsonl = open(jsonl_path, "w", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise UsageError(f"cannot write --jsonl {jsonl_path}: {exc.strerror}") from None
        records = runner.events()  # subscribe before the first tick can arrive
        await runner.start()
        _announce(spec, runner)

        async def consume() -> None:
            async for record in records:
                _write(jsonl, record.to_json())
                if isinstance(record, LoadTick):
                    live.show(record)

        consumer = asyncio.create_task(consume())
        waiter = asyncio.create_task(runner.wait())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            live.end()
            print("archon-diag load: stopping Locust (final stats follow)...", file=sys.stderr)
            result = await runner.stop()
            waiter.cancel()
        else:
            result = waiter.result()
        stopper.cancel()
        await consumer
        live.end()
    except BaseException:
        if jsonl is not None:
            jsonl.close()
        raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.aclose()
    analysis = await asyncio.to_thread(analyse, result)
    _write(jsonl, result.to_json())
    _write(jsonl, analysis.to_json())
    if jsonl is not None:
        jsonl.close()
    _report(result, analysis)
    where = out if keep_out else f"{out} (temporary)"
    print(f"\nLocust log and stats JSON: {where}")
    if runner.final is None:
        raise PrerequisiteError(
            f"locust ended without its final stats (exit code {result.exit_code}); "
            f"see {result.log_path}"
        )
    if result.all_refused:
        raise PrerequisiteError(
            f"every request to {spec.host} was refused (connection refused): start the "
            "service or pass --host"
        )
    return 0


def _announce(spec: LoadSpec, runner: LocustRun) -> None:
    p = spec.plan
    source = spec.locustfile or "the Archon scenario"
    print(
        f"archon-diag load: {p.kind}, up to {p.max_users} users for "
        f"{format_duration(p.duration_s)} against {spec.host} ({source}), "
        f"locust pid {runner.pid}",
        file=sys.stderr,
    )
    if spec.expect_workers:
        host = spec.master_bind_host if spec.master_bind_host not in ("*", "0.0.0.0") else "MASTER"
        cmd = " ".join(worker_command(spec, host))
        print(f"start {spec.expect_workers} worker(s) with: {cmd}", file=sys.stderr)


def _write(jsonl: IO[str] | None, data: dict[str, Any]) -> None:
    if jsonl is not None and not jsonl.closed:
        jsonl.write(json.dumps(data, separators=(",", ":")) + "\n")
        with contextlib.suppress(OSError):
            jsonl.flush()


def _report(result: Any, analysis: Any) -> None:
    print(endpoint_table(result))
    total = result.total
    print(
        f"\n{total.requests} requests, {total.failures} failed ({total.fail_ratio:.1%}) in "
        f"{format_duration(result.duration_s)}; {result.stop_reason or 'done'}"
        + (f"; {result.dropped_lines} live lines dropped" if result.dropped_lines else "")
    )
    if result.errors:
        print("\nerrors:")
        for e in result.errors[:5]:
            print(f"  {e.occurrences:>6}  {e.method} {e.name}: {e.error[:100]}")
    if result.stages and result.plan.kind in ("stress", "step", "spike"):
        print("\n" + stage_table(result.stages))
    if analysis.knee is not None:
        print("\n" + analysis.knee.describe())
    if analysis.recovery is not None:
        print("\n" + analysis.recovery.describe())
    if analysis.findings:
        print("\nfindings:")
        for f in rank(list(analysis.findings))[:5]:
            print(f"  [{f.severity.label:>8} {f.score:5.1f}] {f.title}")
