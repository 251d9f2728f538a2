"""Bundle, gates and renderers on a hand-built report (no probes involved)."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from diag import gates, render
from diag.bundle import Bundle, BundleWriter
from diag.findings import Finding, Location
from diag.report import REPORT_SCHEMA, Report
from probes.errors import UsageError


def _report(p95: float = 640.0, error_rate: float = 0.004) -> Report:
    findings = [
        Finding(
            "slow_query",
            "per-project task scan",
            42.0,
            "42% of database time",
            "CREATE INDEX ...",
            Location(queryid=7, sql="SELECT * FROM t WHERE p = $1"),
            {"calls": 900},
            "postgres",
        ),
        Finding(
            "memory_leak",
            "chat sessions retained",
            61.0,
            "limit in 40 min",
            "evict sessions",
            Location(code="add_message (server.py:10)"),
            {},
            "process",
        ),
        Finding(
            "cpu_hotspot",
            "compute_etag",
            12.0,
            "12% of CPU",
            "hash less",
            Location(code="compute_etag (server.py:88)"),
            {},
            "pyspy",
        ),
    ]
    load = {
        "totals": {
            "requests": 1000,
            "failures": 4,
            "error_rate": error_rate,
            "rps": 33.3,
            "p50_ms": 40.0,
            "p95_ms": p95,
            "p99_ms": 900.0,
        },
        "endpoints": [
            {
                "name": "GET /api/projects",
                "requests": 600,
                "failures": 0,
                "p50_ms": 50,
                "p95_ms": 700,
                "p99_ms": 950,
            }
        ],
        "timeline": [
            {
                "t": float(i),
                "users": 10,
                "rps": 30 + i,
                "p50_ms": 40,
                "p95_ms": 600 + i,
                "p99_ms": 900,
            }
            for i in range(30)
        ],
    }
    processes = [
        {
            "label": "server (pid 1)",
            "pid": 1,
            "cpu_mean": 55.0,
            "rss_start": 1e8,
            "rss_end": 2e8,
            "leak_verdict": "heap leak",
            "series": [[float(i), 50.0, 1e8 + i * 1e6] for i in range(30)],
        }
    ]
    return Report(
        run={"id": "r1", "status": "complete", "duration_s": 60},
        load=load,
        processes=processes,
        findings=findings,
    )


def test_bundle_survives_a_torn_line_and_no_close(tmp_path: Path) -> None:
    writer = BundleWriter.create(tmp_path / "b", {"options": {"dsn": "x"}})
    writer.emit("load", {"rps": 1.0}, t=1.0)
    writer.emit("load", {"rps": 2.0}, t=2.0)
    with (tmp_path / "b" / "events" / "load.jsonl").open("a") as handle:
        handle.write('{"rps": 3')  # killed mid-write
    bundle = Bundle(tmp_path / "b")
    assert bundle.status == "killed"
    assert [r["rps"] for r in bundle.events("load")] == [1.0, 2.0]
    assert bundle.ended_at == 2.0
    writer.close("interrupted")
    assert Bundle(tmp_path / "b").status == "interrupted"


def test_live_passes_read_a_stream_from_where_their_window_began(tmp_path: Path) -> None:
    """The live view's recent records come from the last pass's window start on: the
    same records as a whole read, without reading (or converting) the older ones again."""
    from diag import analysis

    writer = BundleWriter.create(tmp_path / "b", {})
    for i in range(100):
        writer.emit("pg_activity", {"n": i}, t=float(i))
    bundle = Bundle(tmp_path / "b")
    seen: list[int] = []

    def convert(e: dict) -> int:
        seen.append(e["n"])
        return int(e["n"])

    assert analysis._recent(bundle, "pg_activity", 10.0, convert) == list(range(89, 100))
    assert len(seen) == 100  # the first pass reads it all
    for i in range(100, 120):
        writer.emit("pg_activity", {"n": i}, t=float(i))
    seen.clear()
    assert analysis._recent(bundle, "pg_activity", 10.0, convert) == list(range(109, 120))
    assert seen == list(range(89, 120))  # from the last window's start, not from 0
    offset, first = next(bundle.events_from("pg_activity", analysis._RECENT_FROM[
        (bundle.path / "events" / "pg_activity", 10.0)]))  # fmt: skip
    assert first["n"] == 109 and offset > 0
    writer.close("complete")


def test_live_tap_keeps_the_last_seconds_and_the_first_point() -> None:
    """The live figures keep their last ``keep`` seconds, and each process its first
    point too (the change over the run starts there)."""
    from diag import session

    tap = session._Tap(t0=100.0, keep=3)
    for i in range(6):
        tap("load", {"type": "tick", "t": 101.0 + i, "users": i, "rps": 2.0 * i,
                     "fail_per_s": 0.0, "p50_ms": None if i == 4 else 10.0 + i,
                     "p95_ms": 20.0, "p99_ms": None})  # fmt: skip
        tap("process", {"type": "process", "t": 101.0 + i, "pid": 7, "cpu_percent": 1.0,
                        "rss": 1000 + i})  # fmt: skip
        if i == 1:
            assert [p.rss_bytes for p in tap.view()[2][7]] == [1000, 1001]
    load, _, series = tap.view()
    assert [p.users for p in load] == [3, 4, 5] and [p.t for p in load] == [4.0, 5.0, 6.0]
    assert load[1].p50_ms is None and load[2].p50_ms == 15.0
    assert [p.rss_bytes for p in series[7]] == [1000, 1003, 1004, 1005]
    assert session._Tap(t0=0.0).view() == ((), (), {})


def test_database_section_reads_snapshots_two_at_a_time(tmp_path: Path) -> None:
    """Statements cover the run's first snapshot to its last and the timeline every pair
    of consecutive snapshots, whole or in a live window (the live timeline is the
    window's tail of the whole one, its statements the same)."""
    from diag import analysis

    writer = BundleWriter.create(tmp_path / "b", {})
    for qid, text in ((1, "SELECT a FROM t WHERE id = $1"), (2, "UPDATE t SET a = $1")):
        writer.emit("pg_texts", {"queryid": qid, "query": text, "is_probe": False})

    def counters(qid: int, calls: int, ms: float) -> dict[str, object]:
        return {"userid": 10, "dbid": 5, "queryid": qid, "toplevel": True, "calls": calls,
                "total_exec_ms": ms, "total_plan_ms": 0.0, "rows": calls,
                "shared_blks_hit": 0, "shared_blks_read": 0, "shared_blks_dirtied": 0,
                "shared_blks_written": 0, "temp_blks_read": 0, "temp_blks_written": 0,
                "blk_read_ms": 0.0, "blk_write_ms": 0.0}  # fmt: skip

    for i in range(6):  # one snapshot every 5 s; statement 1 speeds up, 2 stays put
        t = 1000.0 + 5 * i
        rows = [counters(1, 10 * i * i, 50.0 * i * i), counters(2, i, 2.0 * i)]
        snap = {"taken_at": t, "cost_ms": 1.0, "server_version_num": 150000,
                "pss_version": "1.10", "statements": rows}  # fmt: skip
        writer.emit("pg_statements", snap, t=t)
    bundle = Bundle(tmp_path / "b")
    whole = analysis.db_section(bundle, {}, None)[0]
    live = analysis.db_section(bundle, {}, 12.0)[0]
    assert whole is not None and live is not None
    # database time per second between consecutive snapshots: (50 (i^2 - (i-1)^2) + 2) / 5
    assert [v for _, v in whole["timeline"]] == [10.4, 30.4, 50.4, 70.4, 90.4]
    assert live["timeline"] == whole["timeline"][-2:]  # the last 12 s: three snapshots
    assert live["top"] == whole["top"]
    calls = {s["queryid"]: s["calls"] for s in whole["top"]}
    assert calls == {1: 250, 2: 5}  # from the first snapshot to the last
    writer.close("complete")


def test_request_counts_take_the_snapshots_nearest_the_window_ends(tmp_path: Path) -> None:
    """Requests per endpoint in the measured window: the last cumulative snapshot up to
    its end (one second of slack) less the last one before its start."""
    from diag.analysis import request_counts

    writer = BundleWriter.create(tmp_path / "b", {})

    def snap(t: float, home: int, api: int) -> None:
        rows = [{"method": "GET", "name": n, "requests": r, "failures": 0}
                for n, r in (("/", home), ("/api", api), ("Aggregated", home + api))]  # fmt: skip
        writer.emit("load", {"type": "endpoints", "t": t, "elapsed": t, "rows": rows}, t=t)

    writer.emit("load", {"type": "tick", "t": 0.5}, t=0.5)
    for t, home, api in ((1, 5, 0), (5, 20, 10), (10, 40, 30), (15, 60, 50), (20, 90, 90)):
        snap(float(t), home, api)
    bundle = Bundle(tmp_path / "b")
    assert request_counts(bundle, 6.0, 14.5) == {"GET /": 40, "GET /api": 40}
    assert request_counts(bundle, 6.0, None) == {"GET /": 70, "GET /api": 80}
    assert request_counts(bundle, None, 5.0) == {"GET /": 20, "GET /api": 10}
    assert request_counts(bundle, 0.5, 0.0) == {"GET /": 5}  # no snapshot before either end
    assert request_counts(Bundle(BundleWriter.create(tmp_path / "e", {}).path), 1.0, 2.0) == {}
    writer.close("complete")


def test_bundle_refuses_non_empty_out_and_garbage(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        BundleWriter.create(tmp_path / "full", {})
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "manifest.json").write_text("{nope")
    with pytest.raises(UsageError, match="not valid JSON"):
        Bundle(tmp_path / "junk")
    with pytest.raises(UsageError, match="not a run bundle"):
        Bundle(tmp_path)


@pytest.mark.parametrize(
    ("expr", "passed"),
    [
        ("p95>500ms", False),
        ("p95>1s", True),
        ("error_rate>1%", True),
        ("error_rate>0.1%", False),
        ("leak", False),
        ("severity>=critical", False),
        ("kind:n_plus_one", True),
        ("findings>5", True),
        ("rps<10", True),
    ],
)
def test_gates(expr: str, passed: bool) -> None:
    (result,) = gates.evaluate_all([expr], _report())
    assert result.passed is passed, result


def test_regression_gate_needs_and_uses_a_baseline() -> None:
    with pytest.raises(UsageError, match="baseline"):
        gates.evaluate_all(["regression>20%"], _report())
    base = _report(p95=500.0)
    (worse,) = gates.evaluate_all(["regression>20%"], _report(p95=640.0), base)
    assert not worse.passed and "p95 +28%" in worse.actual
    (same,) = gates.evaluate_all(["regression>20%"], _report(p95=520.0), base)
    assert same.passed


@pytest.mark.parametrize("bad", ["p95>>1", "latency>5", "severity>=huge", "", "p95>fast"])
def test_bad_gates_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        gates.parse_gate(bad)


def test_renderers_agree_on_the_ranking() -> None:
    report = _report()
    report = report.with_gates(gates.evaluate_all(["p95>500ms", "error_rate>1%"], report))
    data = json.loads(render.render(report, "json"))
    assert data["schema"] == REPORT_SCHEMA
    assert [f["kind"] for f in data["findings"]] == ["memory_leak", "slow_query", "cpu_hotspot"]
    assert Report.from_json(data).to_json() == data

    md = render.render(report, "md")
    assert md.index("chat sessions retained") < md.index("per-project task scan")
    assert "❌ FAIL" in md and "✅ pass" in md

    term = render.render(report, "term", width=100)
    assert "CRIT" in term and "compute_etag" in term

    page = render.render(report, "html")
    assert page.count("<svg") >= 3 and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )

    junit = ET.fromstring(render.render(report, "junit").split("?>", 1)[1])
    suite = junit.find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"


def test_compare_finds_new_resolved_and_plan_changes() -> None:
    from diag.compare import compare, render_comparison

    def plan(node: str, index: str | None, cost: float) -> dict[str, object]:
        return {"queryid": 7, "plan": {"source": "auto_explain", "root": {
            "node_type": "Limit", "total_cost": cost, "children": [
                {"node_type": node, "relation": "archon_tasks", "index_name": index,
                 "total_cost": cost, "children": []}]}}}  # fmt: skip

    base = _report(p95=900.0)
    base = Report(**{**base.__dict__, "plans": [plan("Seq Scan", None, 16000.0)]})
    fixed = [f for f in _report().findings if f.kind != "slow_query"]
    new = Report(**{**_report(p95=300.0).__dict__, "findings": fixed,
                    "plans": [plan("Index Scan", "idx_tasks_project", 12.5)]})  # fmt: skip
    comp = compare(base, new)
    assert [f.kind for f in comp.resolved] == ["slow_query"] and comp.new == []
    p95 = next(f for f in comp.figures if f.name == "p95 ms")
    assert p95.verdict == "better"
    (change,) = comp.plans
    assert change.base_shape == "Limit > Seq Scan on archon_tasks"
    assert change.new_shape == "Limit > Index Scan on archon_tasks using idx_tasks_project"
    text = render_comparison(comp, "term")
    assert "resolved findings: 1" in text and "no regression" in text
    assert compare(new, base).regressed


def test_memray_attach_step_is_not_read_as_growth() -> None:
    from diag.analysis import without_memray_step
    from probes.process import ProcessSample

    def sample(t: float, rss: int) -> ProcessSample:
        return ProcessSample(t, 1, "p", 5.0, rss, rss - 10, None, 4, 10, 1, None, None)

    flat = [sample(float(t), 100_000_000) for t in range(0, 20)]
    # memray attached at t=20 for 6 s leaves 5 MB behind; the process itself is flat
    during = [sample(float(t), 103_000_000) for t in range(20, 28)]
    after = [sample(float(t), 105_000_000) for t in range(28, 60)]
    fixed = without_memray_step(flat + during + after, 20.0, 6.0)
    assert all(not 19.0 <= s.t <= 28.0 for s in fixed)
    assert {s.rss for s in fixed} == {100_000_000}
    assert {s.uss for s in fixed} == {100_000_000 - 10}


def test_parsed_artefacts_live_one_analysis_pass_and_no_longer() -> None:
    from diag.analysis import _PassCache

    cache = _PassCache()
    loads: list[str] = []

    def get(key: str) -> str:
        return str(cache.get((key,), lambda: loads.append(key) or key.upper()))

    cache.next_pass()
    assert [get("a"), get("b")] == ["A", "B"]
    cache.next_pass()  # the next pass reads "a" again: no re-read; "b" is not read
    assert get("a") == "A" and get("a") == "A"
    cache.next_pass()
    cache.next_pass()  # "b" went unread for a whole pass: dropped, read again when asked
    assert get("b") == "B" and get("a") == "A"
    assert loads == ["a", "b", "b", "a"]
