"""The embedded PostgreSQL and doctor against real servers."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import psutil
import psycopg
import pytest

from diag import cli, pgembed


def _postgres_procs_for(data_dir: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "postgres" and data_dir in cmd:
            found.append(proc)
    return found


def test_pg_up_status_down_via_cli(capsys: pytest.CaptureFixture[str]) -> None:
    base = Path(tempfile.mkdtemp(prefix="archon-diag-cli-pg-", dir="/tmp"))
    try:
        assert cli.main(["pg", "up", "--dir", str(base), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["dsn"].startswith("postgresql://postgres@127.0.0.1:")
        with psycopg.connect(info["dsn"], autocommit=True) as conn:
            assert conn.execute("select count(*) from pg_stat_statements").fetchone() is not None
            settings = dict(
                conn.execute(
                    "select name, setting from pg_settings where name = any(%s)",
                    (
                        [
                            "listen_addresses",
                            "log_destination",
                            "track_io_timing",
                            "compute_query_id",
                            "shared_preload_libraries",
                        ],
                    ),
                ).fetchall()
            )
        assert settings["listen_addresses"] == "127.0.0.1"
        assert settings["log_destination"] == "jsonlog"
        assert settings["track_io_timing"] == "on"
        assert "auto_explain" in settings["shared_preload_libraries"]
        assert _postgres_procs_for(info["data_dir"])

        # up again reuses the running cluster
        assert cli.main(["pg", "up", "--dir", str(base)]) == 0
        assert capsys.readouterr().out.strip() == info["dsn"]
        assert cli.main(["pg", "status", "--dir", str(base)]) == 0
        assert "running" in capsys.readouterr().out

        assert cli.main(["pg", "down", "--dir", str(base)]) == 0
        assert not _postgres_procs_for(info["data_dir"])
        assert cli.main(["pg", "status", "--dir", str(base)]) == 3
        capsys.readouterr()

        # a stopped cluster starts again with its data
        again = pgembed.up(base)
        assert again.running and again.data_dir == info["data_dir"]
    finally:
        pgembed.down(base, purge=True)
    assert not base.exists()


def test_auto_explain_writes_json_plans_with_query_id(pg_cluster: pgembed.ClusterInfo) -> None:
    with psycopg.connect(pg_cluster.dsn, autocommit=True) as conn:
        conn.execute("select pg_sleep(0.12) /* archon-diag-autoexplain-probe */")
    records = [
        json.loads(line) for line in pg_cluster.jsonlog.read_text().splitlines() if line.strip()
    ]
    plans = [r for r in records if "archon-diag-autoexplain-probe" in r.get("message", "")]
    assert plans and plans[-1]["query_id"] != 0
    assert '"Plan"' in plans[-1]["message"]


def test_doctor_passes_on_embedded_cluster(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["doctor", "--dsn", pg_dsn, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    names = {c["name"]: c["status"] for c in report["checks"]}
    assert names["py-spy attach"] == "OK"
    assert names["pg_stat_statements preloaded"] == "OK"
    assert names["auto_explain"] == "OK"
    assert report["ok"] is True


def test_doctor_fails_without_pg_stat_statements(
    pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS doctor_no_pss")
        conn.execute("CREATE DATABASE doctor_no_pss TEMPLATE template0")
    dsn = pg_dsn.rsplit("/", 1)[0] + "/doctor_no_pss"
    assert cli.main(["doctor", "--dsn", dsn, "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    failed = [c for c in report["checks"] if c["status"] == "FAIL"]
    assert [c["name"] for c in failed] == ["pg_stat_statements installed"]
    assert "CREATE EXTENSION pg_stat_statements" in failed[0]["fix"]


def test_doctor_unreachable_dsn_is_a_fail_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = pgembed.free_port()
    assert cli.main(["doctor", "--dsn", f"postgresql://x:hunter2@127.0.0.1:{port}/db"]) == 3
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert "hunter2" not in out.out + out.err
