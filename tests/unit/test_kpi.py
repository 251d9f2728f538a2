"""KPI queries without a server: config parsing and refusals, the preset, gates, and the
report section built from a hand-made bundle."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from diag import gates, render
from diag.analysis import analyse, kpi_section
from diag.bundle import Bundle, BundleWriter
from diag.config import RunConfig, add_run_options, from_args
from diag.kpi import KpiSpec, check_query, percentile, preset_kpis, summarize
from diag.report import Report
from probes.errors import UsageError

DSN = "postgresql://app@127.0.0.1:5432/app"


def _config(tmp_path: Path, toml: str, *argv: str) -> RunConfig:
    path = tmp_path / "diag.toml"
    path.write_text(toml)
    parser = argparse.ArgumentParser()
    add_run_options(parser)
    args = parser.parse_args(["--config", str(path), "--no-load", "--dsn", DSN, *argv])
    return from_args(args)


# ---- configuration -----------------------------------------------------------------------


def test_kpi_tables_parse_into_frozen_specs(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        """
[[kpi]]
name = "open_orders"
query = "SELECT count(*) FROM orders WHERE state = 'open'"
interval = "10s"
unit = "orders"

[[kpi]]
name = "oldest_job_s"
query = "SELECT extract(epoch FROM now() - min(created_at)) FROM jobs"
""",
    )
    assert cfg.kpis == (
        KpiSpec("open_orders", "SELECT count(*) FROM orders WHERE state = 'open'", 10.0, "orders"),
        KpiSpec(
            "oldest_job_s", "SELECT extract(epoch FROM now() - min(created_at)) FROM jobs", 5.0, ""
        ),
    )
    with pytest.raises(AttributeError):
        cfg.kpis[0].name = "x"  # type: ignore[misc]
    # the manifest records them as plain JSON
    options = cfg.to_json()
    assert options["kpis"][0] == {
        "name": "open_orders",
        "query": "SELECT count(*) FROM orders WHERE state = 'open'",
        "interval_s": 10.0,
        "unit": "orders",
    }
    json.dumps(options)


def test_preset_from_toml_or_option_comes_first(tmp_path: Path) -> None:
    own = '[[kpi]]\nname = "mine"\nquery = "SELECT 1"\n'
    cfg = _config(tmp_path, 'kpi_preset = "archon"\n' + own)
    names = [k.name for k in cfg.kpis]
    assert names == [k.name for k in preset_kpis("archon")] + ["mine"]
    cfg2 = _config(tmp_path, own, "--kpi-preset", "archon")
    assert cfg2.kpis == cfg.kpis


def test_archon_preset_is_the_agent_queue() -> None:
    kpis = {k.name: k for k in preset_kpis("archon")}
    assert set(kpis) == {
        "archon_queue_length",
        "archon_queue_wait_p50_ms",
        "archon_llm_latency_p50_ms",
        "archon_ttft_p50_ms",
        "archon_job_completion_p50_ms",
    }
    assert kpis["archon_queue_length"].unit == "jobs"
    assert "archon_agent_jobs" in kpis["archon_ttft_p50_ms"].query
    for spec in kpis.values():
        check_query(spec.name, spec.query)  # every shipped query passes its own check
        assert spec.query.startswith("-- archon-diag:")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[kpi]]\nname = "x"\nquery = "DELETE FROM jobs"\n', "DELETE is not a SELECT"),
        ('[[kpi]]\nname = "x"\nquery = "UPDATE jobs SET a = 1"\n', "UPDATE is not a SELECT"),
        ('[[kpi]]\nname = "x"\nquery = "INSERT INTO t VALUES (1)"\n', "INSERT is not a SELECT"),
        ('[[kpi]]\nname = "x"\nquery = "DROP TABLE jobs"\n', "DROP is not a SELECT"),
        ('[[kpi]]\nname = "x"\nquery = "SELECT 1; DROP TABLE t"\n', "2 statements"),
        (
            '[[kpi]]\nname = "x"\nquery = "WITH d AS (DELETE FROM t RETURNING 1) '
            'SELECT count(*) FROM d"\n',
            "data-modifying DELETE",
        ),
        ('[[kpi]]\nname = "x"\nquery = "SELECT id FROM t FOR UPDATE"\n', "row locks"),
        ('[[kpi]]\nname = "x"\nquery = "SELECT count(*) INTO t2 FROM t"\n', "INTO"),
        ('[[kpi]]\nname = "x"\nquery = "SELECT $1"\n', "placeholders"),
        (
            '[[kpi]]\nname = "x"\nquery = "SELECT pg_terminate_backend(1)"\n',
            "pg_terminate_backend",
        ),
        ('[[kpi]]\nname = "x"\nquery = "SELEC 1"\n', "not valid SQL"),
        ('[[kpi]]\nname = "x"\nquery = ""\n', "empty"),
        ('[[kpi]]\nname = "Queue Length"\nquery = "SELECT 1"\n', "lower case"),
        ('[[kpi]]\nquery = "SELECT 1"\n', "name None"),
        ('[[kpi]]\nname = "x"\n', "needs a query"),
        ('[[kpi]]\nname = "x"\nquery = "SELECT 1"\ninterval = "soon"\n', "not a duration"),
        ('[[kpi]]\nname = "x"\nquery = "SELECT 1"\ninterval = "100ms"\n', "between 1s"),
        ('[[kpi]]\nname = "x"\nquery = "SELECT 1"\nevery = "5s"\n', "unknown key 'every'"),
        ('[[kpi]]\nname = "x"\nquery = "SELECT 1"\nunit = 3\n', "unit must be"),
        ('kpi = "SELECT 1"\n', "[[kpi]] tables"),
        ('kpi_preset = "nope"\n', "unknown kpi_preset"),
        (
            '[[kpi]]\nname = "x"\nquery = "SELECT 1"\n[[kpi]]\nname = "x"\nquery = "SELECT 2"\n',
            "defined twice",
        ),
    ],
)
def test_invalid_kpis_are_one_line_usage_errors(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        _config(tmp_path, toml)
    text = str(info.value)
    assert message in text, text
    assert "\n" not in text


def test_kpis_need_a_dsn() -> None:
    with pytest.raises(UsageError, match="need the database"):
        RunConfig(no_load=True, targets=("1",), kpis=preset_kpis("archon")).validate()


def test_server_side_check_refuses_volatile_functions() -> None:
    def lookup(names: list[str]) -> dict[str, set[str]]:
        return {"count": {"i"}, "bump_counter": {"v"}}

    check_query("ok", "SELECT count(*) FROM t", lookup)
    with pytest.raises(UsageError, match="volatile function bump_counter"):
        check_query("bad", "SELECT bump_counter()", lookup)


# ---- summaries, report section, renderers -----------------------------------------------


def test_summarize_stats_cover_the_measured_window_and_series_is_downsampled() -> None:
    samples: list[tuple[float, float | None]] = [(1000.0 + i, float(i)) for i in range(1000)]
    samples.append((1500.5, None))
    out = summarize("q", "jobs", samples, t0=1000.0, start=1100.0, end=1199.0)
    assert out["samples"] == 100  # t 1100..1199 (the window's end has 0.5 s of slack)
    assert out["empty"] == 0
    assert out["mean"] == pytest.approx(149.5)
    assert (out["min"], out["max"], out["last"]) == (100.0, 199.0, 199.0)
    assert out["p95"] == 194.0
    assert 250 <= len(out["series"]) <= 300
    assert out["series"][0] == [0.0, 0.0]
    assert percentile([5.0], 95) == 5.0


def _bundle(tmp_path: Path) -> Bundle:
    spec = KpiSpec("queue_length", "SELECT 1", 1.0, "jobs")
    never = KpiSpec("never", "SELECT NULL", 1.0, "ms")
    writer = BundleWriter.create(
        tmp_path / "b",
        {"started_at": 1000.0, "options": {"kpis": [spec.to_json(), never.to_json()]}},
    )
    writer.emit("session", {"phase": "warmup"}, t=1000.0)
    writer.emit("session", {"phase": "measuring"}, t=1010.0)
    for i in range(30):
        t = 1000.0 + i
        writer.emit("kpi", {"name": "queue_length", "value": float(i % 7), "unit": "jobs"}, t=t)
        writer.emit("kpi", {"name": "never", "value": None, "unit": "ms"}, t=t)
    writer.emit("session", {"phase": "stopping"}, t=1030.0)
    writer.close("complete")
    return Bundle(writer.path)


def test_report_section_from_a_bundle(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    kpis = kpi_section(bundle)
    assert [k["name"] for k in kpis] == ["queue_length", "never"]
    queue = kpis[0]
    window = [float(i % 7) for i in range(10, 30)]
    assert queue["samples"] == 20
    assert queue["mean"] == pytest.approx(sum(window) / 20, abs=1e-3)
    assert queue["max"] == 6.0 and queue["min"] == 0.0 and queue["last"] == float(29 % 7)
    assert queue["window"] == "measured"
    assert len(queue["series"]) == 30 and queue["series"][3] == [3.0, 3.0]
    assert kpis[1]["samples"] == 0 and kpis[1]["empty"] == 20 and kpis[1]["mean"] is None

    report = analyse(bundle)
    assert report.kpis == kpis
    again = Report.from_json(json.loads(json.dumps(report.to_json())))
    assert again.kpis == kpis
    term = render.render(report, "term", width=140)
    assert "KPIs" in term and "queue_length" in term and "no samples" in term
    md = render.render(report, "md")
    assert "## KPIs" in md and "| queue_length | 20 |" in md
    html = render.render(report, "html")
    assert "<th>KPI</th>" in html and 'aria-label="queue_length (jobs)"' in html


def test_no_kpis_no_section(tmp_path: Path) -> None:
    writer = BundleWriter.create(tmp_path / "b", {"options": {}})
    writer.close("complete")
    report = analyse(Bundle(writer.path))
    assert report.kpis == []
    assert "KPIs" not in render.render(report, "md")
    assert report.to_json()["kpis"] == []


# ---- gates -------------------------------------------------------------------------------


def _with_kpis() -> Report:
    return Report(
        run={"id": "x"},
        kpis=[
            {"name": "queue_length", "unit": "jobs", "samples": 20, "mean": 12.5, "p95": 30.0,
             "max": 31.0, "empty": 0},
            {"name": "never", "unit": "ms", "samples": 0, "mean": None, "empty": 7},
        ],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("expr", "passed"),
    [
        ("kpi:queue_length>20", True),
        ("kpi:queue_length>10", False),
        ("kpi:queue_length>=12.5", False),
        ("kpi:queue_length<5", True),
        ("kpi:queue_length<=12.5", False),
        ("KPI:queue_length < 100", False),
    ],
)
def test_kpi_gate_on_the_mean(expr: str, passed: bool) -> None:
    result = gates.evaluate(gates.parse_gate(expr), _with_kpis())
    assert result.passed is passed
    assert result.actual == "12.5 jobs (mean)"


def test_kpi_gate_without_samples_fails_and_says_so() -> None:
    empty = gates.evaluate(gates.parse_gate("kpi:never>100"), _with_kpis())
    assert not empty.passed and empty.actual == "no samples"
    assert "NULL/no row 7 time(s)" in empty.detail
    missing = gates.evaluate(gates.parse_gate("kpi:nothere<1"), _with_kpis())
    assert not missing.passed and missing.actual == "no samples"
    assert "no KPI 'nothere'" in missing.detail and "queue_length" in missing.detail


@pytest.mark.parametrize("expr", ["kpi:queue_length", "kpi:>5", "kpi:q>5ms", "kpi:q>>5"])
def test_invalid_kpi_gates(expr: str) -> None:
    with pytest.raises(UsageError, match="kpi:NAME>NUMBER"):
        gates.parse_gate(expr)


def test_kind_gates_still_work() -> None:
    gate = gates.parse_gate("kind:missing_index")
    assert (gate.metric, gate.word) == ("kind", "missing_index")
