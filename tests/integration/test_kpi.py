"""KPI queries on a real PostgreSQL: the probe inside a Session (samples, NULLs, a failing
KPI switched off alone, refusals checked on the server, nothing written), and the Archon
preset through ``archon-diag run`` against the stand-in's real agent-job queue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from diag import cli
from diag.analysis import analyse
from diag.bundle import Bundle, BundleWriter
from diag.config import RunConfig
from diag.demo.stack import DemoTarget
from diag.kpi import KpiSpec
from diag.session import Session
from diag.session_kpi import KpiProbe


def _session(dsn: str, kpis: list[KpiSpec], out: Path, duration: float) -> Bundle:
    config = RunConfig(dsn=dsn, no_load=True, warmup=0.5, duration=duration, kpis=tuple(kpis))
    bundle = BundleWriter.create(out, {"command": "test", "options": config.to_json()})
    session = Session(config, bundle, [], [KpiProbe(dsn, kpis)])
    return Bundle(asyncio.run(session.run()))


def test_probe_samples_and_switches_off_only_the_failing_kpis(pg_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS kpi_guarded")
        conn.execute("CREATE TABLE kpi_guarded AS SELECT g AS id FROM generate_series(1, 50) g")
    kpis = [
        KpiSpec("answer", "SELECT 42", 1.0, "things"),
        KpiSpec("rows", "SELECT count(*) FROM kpi_guarded", 1.0, "rows"),
        KpiSpec("nothing", "SELECT NULL::int", 1.0, ""),
        KpiSpec("missing", "SELECT count(*) FROM no_such_table", 1.0, ""),
        KpiSpec("words", "SELECT 'abc'::text", 1.0, ""),
        # a spec that bypassed the config's check: refused again when the probe starts
        KpiSpec("deleter", "DELETE FROM kpi_guarded", 1.0, ""),
        # volatile on the server (changes session state): refused with the server's help
        KpiSpec("seed", "SELECT setseed(0.5)", 1.0, ""),
    ]
    bundle = _session(pg_dsn, kpis, tmp_path / "b", duration=3.0)

    events = list(bundle.events("kpi"))
    by_name: dict[str, list[object]] = {}
    for e in events:
        by_name.setdefault(str(e["name"]), []).append(e["value"])
    assert set(by_name) == {"answer", "rows", "nothing"}
    assert len(by_name["answer"]) >= 3 and set(by_name["answer"]) == {42.0}
    assert set(by_name["rows"]) == {50.0}
    assert set(by_name["nothing"]) == {None}
    assert all(e["unit"] == {"answer": "things", "rows": "rows", "nothing": ""}[e["name"]]
               for e in events)  # fmt: skip

    report = analyse(bundle)
    notes = "\n".join(report.notes)
    assert "KPI missing switched off" in notes and "no_such_table" in notes
    assert "KPI words switched off: returns a str, not a number" in notes
    assert "KPI deleter switched off" in notes and "DELETE is not a SELECT" in notes
    assert "KPI seed switched off" in notes and "volatile function setseed" in notes
    assert report.run["probes"]["kpi"] == "degraded"
    answer = report.kpi("answer")
    assert answer is not None and answer["mean"] == 42.0 and answer["samples"] >= 2
    nothing = report.kpi("nothing")
    assert nothing is not None and nothing["samples"] == 0 and nothing["empty"] >= 2
    # disabled KPIs are still listed (configured), with no samples
    missing = report.kpi("missing")
    assert missing is not None and missing["samples"] == 0
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT count(*) FROM kpi_guarded").fetchone()
        assert row is not None and row[0] == 50
        # our statements carry the archon-diag marker (kept out of the statement analysis)
        marked = conn.execute(
            "SELECT count(*) FROM pg_stat_statements WHERE query LIKE %s",
            ("-- archon-diag: kpi answer%",),
        ).fetchone()
        assert marked is not None and marked[0] >= 1


def test_archon_preset_through_run_on_the_stand_in_queue(
    demo_target_factory: Callable[[str], DemoTarget],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = demo_target_factory("all")
    with httpx.Client(base_url=target.agents_url, timeout=30) as http:
        for _ in range(15):  # more jobs than the 3 workers: a queue forms, then drains
            http.post("/agents/run", json={"agent": "rag", "max_tokens": 16}).raise_for_status()
    out = tmp_path / "bundle"
    code = cli.main(
        [
            "run", "--headless", "--no-load", "--no-memray", "--dsn", target.dsn,
            "--kpi-preset", "archon", "--warmup", "0s", "--duration", "7s", "--out", str(out),
            "--fail-on", "kpi:archon_queue_length>1000",
            "--fail-on", "kpi:archon_job_completion_p50_ms<=0",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "KPIs" in captured.out and "archon_queue_length" in captured.out
    report = json.loads((out / "report.json").read_text())
    kpis = {k["name"]: k for k in report["kpis"]}
    assert set(kpis) == {
        "archon_queue_length",
        "archon_queue_wait_p50_ms",
        "archon_llm_latency_p50_ms",
        "archon_ttft_p50_ms",
        "archon_job_completion_p50_ms",
    }
    queue = kpis["archon_queue_length"]
    assert queue["unit"] == "jobs" and queue["samples"] >= 3 and queue["max"] >= 1
    for name in ("archon_llm_latency_p50_ms", "archon_ttft_p50_ms",
                 "archon_job_completion_p50_ms", "archon_queue_wait_p50_ms"):  # fmt: skip
        assert kpis[name]["samples"] >= 1, kpis[name]
        assert kpis[name]["mean"] > 0 and kpis[name]["unit"] == "ms"
    # time to first token comes before the whole LLM call, which comes before completion
    assert kpis["archon_ttft_p50_ms"]["mean"] <= kpis["archon_llm_latency_p50_ms"]["mean"]
    assert kpis["archon_llm_latency_p50_ms"]["mean"] <= kpis["archon_job_completion_p50_ms"]["mean"]
    gates = {g["expr"]: g for g in report["gates"]}
    assert gates["kpi:archon_queue_length>1000"]["passed"]
    assert gates["kpi:archon_job_completion_p50_ms<=0"]["actual"].endswith("ms (mean)")
    html = (out / "report.html").read_text()
    assert 'aria-label="archon_queue_length (jobs)"' in html
    assert "archon_ttft_p50_ms" in (out / "report.md").read_text()


def test_failing_kpi_gate_exits_1(pg_dsn: str, tmp_path: Path) -> None:
    toml = tmp_path / "diag.toml"
    toml.write_text(
        '[[kpi]]\nname = "answer"\nquery = "SELECT 42"\ninterval = "1s"\nunit = "n"\n'
        '[[kpi]]\nname = "nothing"\nquery = "SELECT NULL"\ninterval = "1s"\n'
    )
    out = tmp_path / "b"
    code = cli.main(
        [
            "run", "--headless", "--no-load", "--dsn", pg_dsn, "--config", str(toml),
            "--warmup", "0s", "--duration", "2s", "--out", str(out),
            "--fail-on", "kpi:answer>=42", "--fail-on", "kpi:nothing>1",
        ]
    )  # fmt: skip
    assert code == 1
    gates = {g["expr"]: g for g in json.loads((out / "report.json").read_text())["gates"]}
    assert not gates["kpi:answer>=42"]["passed"]
    assert gates["kpi:answer>=42"]["actual"] == "42 n (mean)"
    assert not gates["kpi:nothing>1"]["passed"]
    assert gates["kpi:nothing>1"]["actual"] == "no samples"
