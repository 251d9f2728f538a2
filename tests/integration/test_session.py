"""One run, one report: real sessions against the Archon stand-in (real Locust, py-spy,
memray and PostgreSQL probes), the bundle, the renderers, gates, killed runs, compare."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from diag import cli
from diag.bundle import Bundle
from diag.demo.stack import DemoTarget

CLI = [sys.executable, "-m", "diag"]


def _run_args(
    target: DemoTarget, out: Path, duration: str, *extra: str, users: int = 4
) -> list[str]:
    return [
        "run", "--headless",
        "--target", str(target.pids["server"]), "--target", str(target.pids["agents"]),
        "--dsn", target.dsn, "--host", target.server_url, "--agents-host", target.agents_url,
        "--users", str(users), "--spawn-rate", str(users), "--warmup", "3s",
        "--duration", duration,
        "--out", str(out), *extra,
    ]  # fmt: skip


def test_headless_run_writes_every_report_and_applies_gates(
    demo_target_factory: Callable[[str], DemoTarget],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = demo_target_factory("all")
    out = tmp_path / "bundle"
    # 8 users: at 4 the stand-in's server was on the CPU 4-9 % of the time, and py-spy's
    # 114-133 samples in 14 s sat close to the 5 % busy floor for CPU hotspots (one fresh
    # clone got none); at 8 it took 219-241
    code = cli.main(
        _run_args(target, out, "14s", "--fail-on", "p95>1ms", "--fail-on", "error_rate>50%",
                  users=8)
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1, captured.err  # p95 > 1 ms is certain: that gate must fail
    assert "Traceback" not in captured.err
    for name in (
        "report.json",
        "report.md",
        "report.html",
        "junit.xml",
        "report.txt",
        "manifest.json",
    ):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == "archon-diag.report/1"
    assert report["run"]["status"] == "complete"
    assert report["load"]["totals"]["requests"] > 20
    # the session keeps no tick list of its own: the bundle has the ticks, the result
    # their count (a tick or two may come after the session stopped reading)
    bundle = Bundle(out)
    (result,) = bundle.events("load_result")
    ticks = [e for e in bundle.events("load") if e.get("type") == "tick"]
    assert len(ticks) > 10 and 0 <= result["ticks"] - len(ticks) <= 2
    assert len(report["load"]["timeline"]) == len(ticks)
    assert {p["role"] for p in report["processes"]} >= {""} or report["processes"]
    kinds = {f["kind"] for f in report["findings"]}
    assert kinds & {"missing_index", "plan_issue", "slow_query"}, kinds
    assert "cpu_hotspot" in kinds
    scores = [f["score"] for f in report["findings"]]
    assert scores == sorted(scores, reverse=True)
    gates = {g["expr"]: g["passed"] for g in report["gates"]}
    assert gates == {"p95>1ms": False, "error_rate>50%": True}
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    # no secrets or literals leak into the bundle
    assert "password" not in (out / "manifest.json").read_text().lower()

    # the report is a pure function of the bundle: re-rendering agrees on the ranking, and
    # the run's own gates are evaluated again (so `report` fails a CI step the same way)
    assert cli.main(["report", str(out), "--format", "json", "-o", str(tmp_path / "r.json")]) == 1
    again = json.loads((tmp_path / "r.json").read_text())
    assert [f["key"] for f in again["findings"]] == [f["key"] for f in report["findings"]]
    capsys.readouterr()
    assert cli.main(["report", str(out), "--format", "md", "--fail-on", "error_rate>50%"]) == 0
    md = capsys.readouterr().out
    assert "Ranked findings" in md

    # comparing a run with itself: nothing new, nothing resolved, no regression
    assert cli.main(["compare", str(out), str(out), "--format", "json"]) == 0
    comparison = json.loads(capsys.readouterr().out)
    assert comparison["new_findings"] == [] and comparison["resolved_findings"] == []


def test_killed_run_leaves_a_bundle_that_report_renders(
    demo_target_factory: Callable[[str], DemoTarget], tmp_path: Path
) -> None:
    target = demo_target_factory("all")
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [*CLI, *_run_args(target, out, "60s", "--no-memray")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        load = out / "events" / "load.jsonl"
        while time.monotonic() < deadline:
            if load.is_file() and load.read_text().count("\n") >= 6:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the run produced no load events in 60 s")
        os.killpg(proc.pid, signal.SIGKILL)  # the run and the Locust/py-spy it started
    finally:
        proc.wait(timeout=30)
    result = subprocess.run(
        [*CLI, "report", str(out), "--format", "json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["run"]["status"] == "killed"
    assert report["load"]["timeline"], "the load seen before the kill is in the report"
    assert any("killed" in n for n in report["notes"])


def test_interrupted_run_keeps_what_it_collected(
    demo_target_factory: Callable[[str], DemoTarget], tmp_path: Path
) -> None:
    target = demo_target_factory("all")
    out = tmp_path / "interrupted"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [*CLI, *_run_args(target, out, "60s", "--no-memray")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    load = out / "events" / "load.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        load.is_file() and load.read_text().count("\n") >= 6
    ):
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["status"] == "interrupted"
    assert report["load"]["totals"]["requests"] > 0
    assert "ranked findings" in stdout


def test_bad_input_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["run", "--headless", "--no-load", "--target", "4194303"]) == 3
    assert (
        cli.main(["run", "--headless", "--host", "http://127.0.0.1:1", "--duration", "soon"]) == 2
    )
    assert cli.main(["run", "--headless", "--no-load"]) == 2
    (tmp_path / "bad.toml").write_text("users = [")
    assert cli.main(["run", "--config", str(tmp_path / "bad.toml")]) == 2
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 5, lines


def test_run_on_a_service_it_did_not_start(
    pg_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A running uvicorn app found by its port, the user's own locustfile, a --dsn."""
    from diag.pgembed import free_port

    root = Path(__file__).resolve().parents[1]
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(root / "targets"), "asgi_app:app",
         "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    out = tmp_path / "bundle"
    try:
        import httpx

        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        code = cli.main(
            ["run", "--headless", "--target", f"port:{port}", "--dsn", pg_dsn,
             "--host", f"http://127.0.0.1:{port}",
             "--locustfile", str(root / "fixtures" / "load" / "hot_locustfile.py"),
             "--users", "2", "--spawn-rate", "2", "--warmup", "2s", "--duration", "8s",
             "--no-memray", "--out", str(out)]
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(10)
    err = capsys.readouterr().err
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["status"] == "complete"
    assert [p["pid"] for p in report["processes"]] == [server.pid]
    assert report["load"]["totals"]["requests"] > 20
    assert {e["name"] for e in report["load"]["endpoints"]} == {"GET /hot"}
    hot = [f for f in report["findings"] if f["kind"] == "cpu_hotspot"]
    assert hot and (hot[0]["location"]["code"] or "").startswith("render_etag"), hot[:1]
    assert report["database"], "the --dsn database was probed"
    assert "password" not in (out / "manifest.json").read_text().lower()
