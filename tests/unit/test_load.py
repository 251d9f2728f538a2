"""Load analysis and records on recorded runs (no Locust started here).

The recordings in tests/fixtures/load/ come from real ``archon-diag load --jsonl`` runs
against the loopback servers of tests/integration/load_servers.py:
``stress_run.jsonl`` (queue server, 20 ms/request, 8 users in 4 steps, p95 limit 70 ms),
``spike_run.jsonl`` (queue server, 1 -> 12 -> 1 users over 16 s) and ``archon_run.jsonl``
with Locust's own ``archon_locust_stats.json`` (fake Archon, 10 users, 12 s).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import doctest
import json
import sys
from pathlib import Path
from typing import Any

import pytest

import diag.load
import probes.loadshapes
import probes.locust
from diag import cli
from diag.commands import load as load_cmd
from diag.load import (
    analyse,
    endpoint_table,
    error_bursts,
    find_knee,
    live_line,
    load_findings,
    recovery_time,
    stage_table,
    tail_ms,
)
from probes.errors import UsageError
from probes.loadshapes import Limits, ShapePlan, plan
from probes.locust import (
    ARCHON_SCENARIO,
    PLUGIN,
    EndpointRow,
    ErrorRow,
    LoadResult,
    LoadSpec,
    LoadTick,
    StageSummary,
    build_command,
    parse_line,
    read_locust_json,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "load"


def records(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


def ticks_of(recs: list[dict[str, Any]]) -> list[LoadTick]:
    return [LoadTick.from_json(r) for r in recs if r["type"] == "tick"]


def stages_of(recs: list[dict[str, Any]]) -> list[StageSummary]:
    return [StageSummary.from_json(r) for r in recs if r["type"] == "stage"]


def result_of(recs: list[dict[str, Any]], **changes: Any) -> LoadResult:
    raw = next(r for r in recs if r["type"] == "result")
    base = dict(
        host=raw["host"],
        plan=ShapePlan.from_json(raw["shape"]),
        started_at=raw["started_at"],
        duration_s=raw["duration_s"],
        exit_code=raw["exit_code"],
        stop_reason=raw["stop_reason"],
        stopped_early=raw["stopped_early"],
        total=EndpointRow.from_json(raw["total"]),
        endpoints=tuple(EndpointRow.from_json(e) for e in raw["endpoints"]),
        errors=tuple(ErrorRow(**e) for e in raw["errors"]),
        stages=tuple(StageSummary.from_json(s) for s in raw["stages"]),
        ticks=tuple(ticks_of(recs)),
        dropped_lines=raw["dropped_lines"],
        stats_json=None,
        log_path="",
    )
    base.update(changes)
    return LoadResult(**base)


def row(name: str, requests: int, failures: int = 0, hist: dict[int, int] | None = None,
        p50: float = 10, p95: float = 20, method: str = "GET") -> EndpointRow:  # fmt: skip
    return EndpointRow(
        method, name, requests, failures, 12.0, 1.0, 500.0, p50, p95, p95, 5.0, 0.0,
        histogram=tuple(sorted((hist or {}).items())),
    )  # fmt: skip


@pytest.mark.parametrize("module", [probes.loadshapes, probes.locust, diag.load])
def test_doctests(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


# -- shapes ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", probes.loadshapes.SHAPES)
def test_every_shape_spans_the_duration_and_peaks_at_users(kind: str) -> None:
    p = plan(kind, users=20, duration_s=100)
    assert p.duration_s == pytest.approx(100)
    assert p.max_users == 20
    assert [s.until_s for s in p.stages] == sorted(s.until_s for s in p.stages)
    assert all(s.spawn_rate > 0 for s in p.stages)
    assert p.stage_at(0) == 0 and p.stage_at(100) is None
    assert ShapePlan.from_json(json.loads(p.dumps())) == p
    assert (p.limits is not None) == (kind == "stress")


def test_shape_details() -> None:
    soak = plan("soak", users=10, duration_s=1000)
    assert [(s.name, s.until_s, s.users) for s in soak.stages] == [
        ("ramp-up", 100.0, 10), ("hold", 900.0, 10), ("ramp-down", 1000.0, 0),
    ]  # fmt: skip
    assert soak.stages[0].spawn_rate == pytest.approx(0.1)  # 10 users over the 100 s ramp
    stress = plan("stress", users=8, duration_s=12, steps=4, limits=Limits(0.05, 70))
    assert [s.users for s in stress.stages] == [2, 4, 6, 8]
    assert stress.limits == Limits(0.05, 70) and 0 < stress.settle_s <= 1.5
    spike = plan("spike", users=40, duration_s=60, baseline_users=2)
    assert [s.users for s in spike.stages] == [2, 40, 2]
    assert spike.stages[1].spawn_rate >= 40  # the burst lands within a second
    assert plan("load", users=5, duration_s=30, spawn_rate=2).stages[0].spawn_rate == 2
    with pytest.raises(ValueError, match="unknown shape"):
        plan("sine", users=5, duration_s=30)


def test_limits_agree_with_the_verdicts_the_plugin_recorded() -> None:
    recs = records("stress_run.jsonl")
    limits = result_of(recs).plan.limits
    assert limits is not None
    stages = stages_of(recs)
    assert [s.verdict for s in stages] == ["ok", "crossed"]
    for s in stages:
        reason = limits.crossed_by(s.error_rate, s.p95_ms, s.requests)
        assert (reason is not None) == (s.verdict == "crossed")
        assert reason == s.reason


# -- records -------------------------------------------------------------------------------


def test_parse_line_types_and_garbage() -> None:
    recs = records("archon_run.jsonl")
    tick_line = json.dumps(next(r for r in recs if r["type"] == "tick"))
    assert isinstance(parse_line(tick_line), LoadTick)
    assert parse_line(tick_line.encode()) == LoadTick.from_json(json.loads(tick_line))
    assert parse_line("not json") is None and parse_line("[1, 2]") is None
    assert parse_line('{"type": "tick"}') is None  # missing fields: skipped, not a crash
    assert parse_line('{"type": "hello", "pid": 1}') == {"type": "hello", "pid": 1}
    tick = LoadTick.from_json(json.loads(tick_line))
    assert LoadTick.from_json(tick.to_json()) == tick


def test_locust_json_rows_match_the_plugins_final_totals() -> None:
    recs = records("archon_run.jsonl")
    raw = next(r for r in recs if r["type"] == "result")
    rows, total = read_locust_json(FIXTURES / "archon_locust_stats.json", raw["duration_s"])
    # the plugin's final line (Locust's own aggregate) and Locust's JSON agree exactly
    for key in ("requests", "failures", "p50_ms", "p95_ms", "p99_ms"):
        assert getattr(total, key) == raw["total"][key], key
    assert total.requests == sum(r.requests for r in rows)
    assert total.max_ms == pytest.approx(raw["total"]["max_ms"])

    def same(r: dict[str, Any]) -> dict[str, Any]:  # rps depends on the rounded duration
        return {k: v for k, v in r.items() if k not in ("rps", "fail_per_s")}

    assert [same(r.to_json()) for r in rows] == [same(e) for e in raw["endpoints"]]
    # and the ticks add up to the same totals
    ticks = ticks_of(recs)
    assert sum(t.requests for t in ticks) == total.requests == ticks[-1].total_requests
    assert {r.name for r in rows} >= {"/api/projects", "/api/projects/{id}/tasks"}
    assert EndpointRow.from_json(rows[0].to_json()) == rows[0]


def test_command_line_passes_the_plugin_first_and_never_json_with_json_file() -> None:
    spec = LoadSpec(plan=plan("load", users=3, duration_s=5), processes=2)
    cmd = build_command(spec, 7, Path("/out/locust_stats"))
    files = cmd[cmd.index("-f") + 1].split(",")
    assert files == [str(PLUGIN), str(ARCHON_SCENARIO)]
    assert "--json" not in cmd and cmd[cmd.index("--json-file") + 1] == "/out/locust_stats"
    assert cmd[cmd.index("--diag-fd") + 1] == "7"
    assert cmd[cmd.index("--master-bind-host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--master-port") + 1] == cmd[cmd.index("--master-bind-port") + 1]
    assert cmd[cmd.index("--host") + 1] == "http://127.0.0.1:8181"  # loopback by default
    mine = build_command(
        LoadSpec(plan=spec.plan, locustfile=Path("x.py"), expect_workers=3), 7, Path("/o/s")
    )
    assert "--agents-host" not in mine and "--expect-workers" in mine
    assert mine[mine.index("--master-bind-port") + 1] == "5557"


def test_nothing_outside_the_subprocess_imports_locust_or_the_locustfiles() -> None:
    root = Path(__file__).resolve().parents[2]
    banned = ("locust", "archon_diag_plugin", "archon_scenario", "probes.locustfiles")
    offenders = []
    sources = [*root.glob("diag/**/*.py"), *root.glob("probes/*.py"), *root.glob("tui/**/*.py")]
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if n.startswith(banned)]
    assert offenders == []
    assert not [m for m in sys.modules if m == "locust" or m.startswith("locust.")]


# -- analysis -------------------------------------------------------------------------------


def test_knee_from_a_recorded_stress_run() -> None:
    recs = records("stress_run.jsonl")
    result = result_of(recs)
    analysis = analyse(result)
    assert analysis.knee is not None
    assert (analysis.knee.users, analysis.knee.crossed_users) == (2, 4)
    assert "knee at 2 users" in analysis.knee.describe()
    assert analysis.recovery is None


def test_knee_edge_cases() -> None:
    def stage(i: int, users: int, p95: float, err: float = 0.0, verdict: str | None = None,
              partial: bool = False, requests: int = 100) -> StageSummary:  # fmt: skip
        return StageSummary(i, f"step {i + 1}", users, i * 10.0, i * 10.0 + 10, 8.0, requests,
                            int(err * requests), err, 10.0, p95 / 2, p95, p95, users, partial,
                            verdict, None)  # fmt: skip

    limits = Limits(0.01, 100)
    never = find_knee([stage(0, 5, 20), stage(1, 10, 40)], limits)
    assert never is not None and never.users == 10 and never.crossed_users is None
    assert "above the tested range" in never.describe()
    first = find_knee([stage(0, 5, 300)], limits)
    assert first is not None and first.users is None and first.crossed_users == 5
    errors = find_knee([stage(0, 5, 20), stage(1, 10, 20, err=0.2)], limits)
    assert errors is not None and errors.users == 5 and "error rate" in (errors.reason or "")
    # a step cut short before it served anything is not evidence of a crossing
    cut = find_knee([stage(0, 5, 20), stage(1, 10, 0, requests=0, partial=True)], limits)
    assert cut is not None and cut.users == 5 and cut.crossed_users is None
    assert find_knee([], limits) is None


def test_recovery_from_a_recorded_spike_run() -> None:
    recs = records("spike_run.jsonl")
    result = result_of(recs)
    rec = analyse(result).recovery
    assert rec is not None and rec.recovered
    assert rec.baseline_p95_ms is not None and rec.peak_p95_ms is not None
    assert rec.peak_p95_ms > 3 * rec.baseline_p95_ms  # the spike was real
    assert rec.recovery_s is not None and 0 <= rec.recovery_s <= 3
    assert "recovered" in rec.describe()


def test_recovery_on_synthetic_ticks() -> None:
    def tick(e: float, stage: str, p95: float | None, req: int = 10, fail: int = 0) -> LoadTick:
        return LoadTick(e, e, "running", 1, 1, stage, 0, None, 1.0, req, fail, float(req),
                        float(fail), p95, p95, p95, p95, 0, 0, 0)  # fmt: skip

    ticks = [tick(e, "baseline", 20) for e in range(1, 6)]
    ticks += [tick(e, "spike", 400) for e in range(6, 9)]
    slow = [500, 300, 100, 25, 22, 21, 20, 20]
    ticks += [tick(9 + i, "recovery", p) for i, p in enumerate(slow)]
    rec = recovery_time(ticks)
    assert rec is not None and rec.recovered and rec.baseline_p95_ms == 20
    assert rec.recovery_s == pytest.approx(3.0)  # healthy from the tick ending at 12 s
    never = recovery_time([*ticks[:8], *(tick(9 + i, "recovery", 400) for i in range(5))])
    assert never is not None and not never.recovered and "not recovered" in never.describe()
    failing = [*ticks[:8], *(tick(9 + i, "recovery", 20, fail=5) for i in range(5))]
    assert not recovery_time(failing).recovered  # type: ignore[union-attr]
    assert recovery_time(ticks[:5]) is None


def test_error_findings_and_bursts() -> None:
    recs = records("archon_run.jsonl")
    base = result_of(recs)
    assert load_findings(base) == []  # a clean run: nothing to report
    ticks = list(base.ticks)
    for i in (4, 5, 6):  # three bad seconds in the middle of the run
        ticks[i] = dataclasses.replace(ticks[i], failures=max(1, ticks[i].requests // 2))
    bursts = error_bursts(ticks)
    assert len(bursts) == 1 and bursts[0][0] < ticks[4].elapsed <= bursts[0][1]
    failing = row("/api/rag/query", 200, failures=40, method="POST")
    result = result_of(
        recs,
        ticks=tuple(ticks),
        total=row("Aggregated", 1000, failures=40, method=""),
        endpoints=(failing, row("/api/health", 800)),
        errors=(ErrorRow("POST", "/api/rag/query", "HTTPError('500 Server Error')", 40),),
    )
    findings = load_findings(result)
    assert [f.kind for f in findings] == ["error_burst"]
    assert findings[0].score == pytest.approx(4.0)  # 40 of 1000 requests
    assert findings[0].location.endpoint == "POST /api/rag/query"
    assert findings[0].evidence["bursts"] == bursts


def test_all_refused_is_one_critical_finding() -> None:
    recs = records("archon_run.jsonl")
    result = result_of(
        recs,
        total=row("Aggregated", 50, failures=50, method=""),
        errors=(ErrorRow("GET", "/ping", "ConnectionRefusedError(111, 'Connection refused')", 50),),
    )
    assert result.all_refused
    (finding,) = load_findings(result)
    assert finding.score == 100 and "refused" in finding.title


def test_latency_tail_finding() -> None:
    # 90 requests at 10 ms and 10 at 1000 ms: the tail above the median is 10 x 990 ms
    slow = row("/api/projects", 100, hist={10: 90, 1000: 10}, p50=10, p95=1000)
    fast = row("/api/health", 100, hist={5: 100}, p50=5, p95=5)
    assert tail_ms(slow) == 9900 and tail_ms(fast) == 0
    recs = records("archon_run.jsonl")
    result = result_of(recs, endpoints=(slow, fast))
    (finding,) = load_findings(result)
    total_time = 90 * 10 + 10 * 1000 + 100 * 5
    assert finding.kind == "latency" and finding.location.endpoint == "GET /api/projects"
    assert finding.score == pytest.approx(100 * 9900 / total_time, abs=0.01)


# -- views and the command ---------------------------------------------------------------


def test_text_views_fit_and_show_the_numbers() -> None:
    recs = records("archon_run.jsonl")
    result = result_of(recs)
    line = live_line(result.ticks[5])
    assert len(line) < 100 and "rps" in line and "p95" in line
    table = endpoint_table(result).splitlines()
    assert table[0].split()[:3] == ["endpoint", "reqs", "fails"]
    assert table[-1].startswith("Aggregated") and str(result.total.requests) in table[-1]
    assert len(table) == len(result.endpoints) + 4
    stages = stage_table(stages_of(records("stress_run.jsonl")))
    assert "crossed (p95" in stages


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    load_cmd.configure(parser)
    return parser.parse_args(argv)


def test_options_become_a_spec() -> None:
    spec = load_cmd.spec_from_args(
        _args(
            [
                "--shape",
                "stress",
                "--users",
                "30",
                "--duration",
                "2m",
                "--max-p95",
                "250ms",
                "--max-error-rate",
                "2%",
                "--steps",
                "3",
                "--agents-host",
                "",
            ]
        )
    )
    assert spec.host == "http://127.0.0.1:8181" and spec.agents_host is None
    assert spec.plan.kind == "stress" and spec.plan.limits == Limits(0.02, 250.0)
    assert [s.users for s in spec.plan.stages] == [10, 20, 30]
    assert spec.plan.duration_s == pytest.approx(120)
    with pytest.raises(UsageError, match="not a URL"):
        load_cmd.spec_from_args(_args(["--host", "localhost:8181"]))
    with pytest.raises(UsageError, match="not both"):
        load_cmd.spec_from_args(_args(["--processes", "2", "--expect-workers", "2"]))


def test_cli_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    assert cli.main(["load", "--locustfile", str(missing), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"archon-diag load: locustfile {missing} does not exist: pass a Python file"]
    assert cli.main(["load", "--scenario", "archon", "--locustfile", "x.py"]) == 2
    assert "not allowed with" in capsys.readouterr().err
    assert cli.main(["load", "--users", "0"]) == 2
