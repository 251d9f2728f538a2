"""``archon-diag profile``: profilers only — attach now, print ranked hotspots, the
wall-time breakdown and leak findings per process."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from diag.findings import Finding, rank
from diag.hotspots import CATEGORIES, scalene_findings
from diag.leaks import memory_limit_for, scalene_leak_findings
from diag.profiling import ProfileOptions, TargetReport, analyse, collect
from diag.units import duration_arg, format_bytes, format_duration
from probes.errors import PrerequisiteError, UsageError
from probes.scalene import ScaleneProfile, ScaleneRun, run_for
from probes.targets import Launched, Target, is_launch_spec, launch, resolve

SCHEMA = "archon-diag.profile/1"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="SPEC",
        help="PID, match:REGEX, port:N, preset:archon, launch:CMD or scalene:CMD (repeatable)",
    )
    parser.add_argument("--duration", type=duration_arg, default=10.0, help="default 10s")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples/s (default 100)")
    parser.add_argument("--window", type=duration_arg, default=5.0, help="py-spy window, 5s")
    parser.add_argument(
        "--blocking",
        dest="nonblocking",
        action="store_false",
        help="py-spy pauses the target for each sample: whole stacks, but a CPU-bound target "
        "loses ~14 %% of its throughput instead of ~2 %%",
    )
    parser.add_argument("--no-wall", action="store_true", help="skip the wall-time breakdown")
    parser.add_argument("--memray", action="store_true", help="add a memray attach window")
    parser.add_argument("--memory-limit", type=float, help="bytes (default: cgroup or RAM)")
    parser.add_argument("--out", type=Path, help="directory for raw artefacts")
    parser.add_argument("--format", choices=("term", "json"), default="term")
    parser.add_argument("-o", "--output", type=Path, help="write the report to FILE")


def _targets(specs: list[str], out_dir: Path) -> tuple[list[Target], list[Launched], list[str]]:
    targets: list[Target] = []
    launched: list[Launched] = []
    scalene_specs: list[str] = []
    for spec in specs:
        if spec.strip().startswith("scalene:"):
            scalene_specs.append(spec)
        elif is_launch_spec(spec):
            run = launch(spec, out_dir / f"launch-{len(launched)}.log")
            launched.append(run)
            targets.append(run.target)
        else:
            targets.extend(resolve(spec))
    seen: set[int] = set()
    unique = [t for t in targets if not (t.pid in seen or seen.add(t.pid))]  # type: ignore[func-returns-value]
    return unique, launched, scalene_specs


async def _main(
    targets: list[Target], scalene_specs: list[str], opts: ProfileOptions
) -> tuple[list[TargetReport], list[tuple[str, ScaleneProfile | str]]]:
    runs = [ScaleneRun(spec, opts.out_dir) for spec in scalene_specs]

    async def scal(run: ScaleneRun) -> tuple[str, ScaleneProfile | str]:
        try:
            return run.spec, await run_for(run, opts.duration)
        except PrerequisiteError as exc:
            return run.spec, str(exc)

    collected_task = asyncio.gather(collect(targets, opts)) if targets else None
    scal_results = await asyncio.gather(*(scal(r) for r in runs))
    collected = (await collected_task)[0] if collected_task is not None else []
    reports = await asyncio.to_thread(lambda: [analyse(c, opts) for c in collected])
    return reports, list(scal_results)


def run(args: argparse.Namespace) -> int:
    if not args.target:
        raise UsageError("give at least one --target SPEC (PID, match:REGEX, port:N, ...)")
    if args.rate <= 0 or args.rate > 1000:
        raise UsageError("--rate must be between 1 and 1000 samples per second")
    if args.duration < 1:
        raise UsageError("--duration must be at least 1s")
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="archon-diag-profile-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    opts = ProfileOptions(
        out_dir=out_dir,
        duration=args.duration,
        rate=args.rate,
        window=args.window,
        nonblocking=args.nonblocking,
        wall=not args.no_wall,
        memray=args.memray,
        memory_limit=args.memory_limit,
    )
    targets, launched, scalene_specs = _targets(args.target, out_dir)
    try:
        if launched:
            time.sleep(0.5)  # let a launched interpreter start before attaching
        started = time.time()
        reports, scal = asyncio.run(_main(targets, scalene_specs, opts))
    finally:
        for run_ in launched:
            run_.stop()
    usable = [r for r in reports if r.profile.samples or r.breakdown or r.suspects]
    if reports and not usable and not any(isinstance(p, ScaleneProfile) for _, p in scal):
        first = next((e for r in reports for e in r.errors), "no samples collected")
        raise PrerequisiteError(first)
    findings = [f for r in reports for f in r.findings]
    scalene_out: list[dict[str, Any]] = []
    for spec, prof in scal:
        if isinstance(prof, str):
            scalene_out.append({"spec": spec, "error": prof})
            continue
        limit = args.memory_limit or memory_limit_for(None)
        these = scalene_findings(prof, spec) + scalene_leak_findings(prof, spec, memory_limit=limit)
        findings += these
        scalene_out.append({"spec": spec, **prof.to_json()})
    ranked = rank(findings)
    doc = {
        "schema": SCHEMA,
        "started": started,
        "duration": args.duration,
        "rate": args.rate,
        "out_dir": str(out_dir),
        "processes": [r.to_json() for r in reports],
        "scalene": scalene_out,
        "findings": [f.to_json() for f in ranked],
    }
    if args.format == "json":
        text = json.dumps(doc, indent=2)
        if args.output:
            args.output.write_text(text + "\n")
        else:
            print(text)
        return 0
    if args.output:
        with args.output.open("w") as fh:
            _render(Console(file=fh, width=120), reports, scalene_out, ranked, out_dir)
    else:
        _render(Console(), reports, scalene_out, ranked, out_dir)
    return 0


def _render(
    console: Console,
    reports: list[TargetReport],
    scalene_out: list[dict[str, Any]],
    ranked: list[Finding],
    out_dir: Path,
) -> None:
    for r in reports:
        state = " [bold red]GONE[/]" if r.gone else ""
        console.print(f"\n[bold]{r.target.label}[/]{state}  {' '.join(r.target.cmdline)[:80]}")
        for err in r.errors:
            console.print(f"  [yellow]! {err}[/]")
        if r.profile.samples:
            table = Table(box=None, header_style="bold", pad_edge=False)
            for col in ("self %", "95% CI", "total %", "function"):
                table.add_column(col, justify="right" if col != "function" else "left")
            for st in r.profile.stats[:10]:
                lo, hi = st.self_ci
                table.add_row(
                    f"{100 * st.self_share:.1f}",
                    f"{100 * lo:.1f}-{100 * hi:.1f}",
                    f"{100 * st.total_share:.1f}",
                    st.label,
                )
            console.print(
                f"  CPU: {r.profile.samples} samples over {format_duration(r.profile.seconds)}"
            )
            console.print(table)
        if r.breakdown is not None and r.breakdown.samples:
            parts = ", ".join(
                f"{c.replace('_', ' ')} {100 * r.breakdown.shares.get(c, 0):.0f}%"
                for c in CATEGORIES
            )
            console.print(f"  wall time (all threads): {parts}")
        for v in r.verdicts:
            if v.status == "not_enough_data" and v.metric not in ("rss", "uss"):
                continue
            console.print(
                f"  leak check {v.metric}: {v.status.replace('_', ' ')} — {v.explanation}"
            )
        for s in r.suspects[:5]:
            if s.status == "flat":
                continue
            console.print(
                f"  memray {s.status}: {s.location} {format_bytes(s.slope)}/s "
                f"(live {format_bytes(s.final_bytes)})"
            )
    for entry in scalene_out:
        console.print(f"\n[bold]scalene[/] {entry['spec']}: {entry.get('error') or 'profile read'}")
    console.print("\n[bold]Findings[/] (ranked)")
    if not ranked:
        console.print("  none")
    for f in ranked[:20]:
        console.print(f"  {f.severity.label:8} {f.score:5.1f}  {f.title}", markup=False)
        console.print(f"         {f.location.describe()}")
    console.print(f"\nartefacts: {out_dir}", highlight=False)
    sys.stdout.flush()
