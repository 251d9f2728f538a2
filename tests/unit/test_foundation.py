from __future__ import annotations

import doctest

import pytest

from diag import attribution, callsites, dbanalysis, findings, indexadvice, units
from diag.findings import Finding, Location, Severity, rank
from probes import sqlfiles
from probes.errors import DiagError, GateFailed, PrerequisiteError, UsageError
from probes.redact import redact_dsn, redact_text


@pytest.mark.parametrize(
    "module", [units, findings, attribution, callsites, dbanalysis, indexadvice]
)
def test_doctests(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


def test_exit_codes_follow_the_contract() -> None:
    assert (DiagError.exit_code, UsageError.exit_code) == (2, 2)
    assert PrerequisiteError.exit_code == 3
    assert GateFailed.exit_code == 1


def test_duration_errors_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="invalid duration"):
        units.parse_duration("soon")


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://app:s3cret@db:5432/x", "postgresql://app:***@db:5432/x"),
        (
            "postgresql://app@db/x?password=s3cret&sslmode=require",
            "postgresql://app@db/x?password=***&sslmode=require",
        ),
        ("host=db user=app password=s3cret dbname=x", "host=db user=app password=*** dbname=x"),
        ("host=db password='a b' dbname=x", "host=db password=*** dbname=x"),
        ("postgresql://app@db/x", "postgresql://app@db/x"),
    ],
)
def test_redact_dsn(dsn: str, expected: str) -> None:
    assert redact_dsn(dsn) == expected
    assert "s3cret" not in redact_dsn(dsn)


def test_redact_text_masks_tokens_and_url_passwords() -> None:
    text = "API_TOKEN=abc123 url=https://u:pw@h/x openai_api_key: sk-xyz"
    out = redact_text(text)
    for secret in ("abc123", "pw@", "sk-xyz"):
        assert secret not in out


def test_sql_loader_is_cached_and_finds_files() -> None:
    names = sqlfiles.available()
    assert "server_version" in names
    first = sqlfiles.load_sql("server_version")
    assert "server_version_num" in first
    assert sqlfiles.load_sql("server_version") is first
    with pytest.raises(KeyError):
        sqlfiles.load_sql("no_such_query")


def test_findings_rank_and_round_trip() -> None:
    slow = Finding(
        "slow_query",
        "slow",
        30.0,
        "30% of db time",
        "add an index",
        Location(queryid=42, sql="SELECT $1"),
        {"calls": 10},
        "postgres",
    )
    hot = Finding(
        "cpu_hotspot",
        "hot",
        55.0,
        "55% of CPU",
        "cache it",
        Location(code="f (a.py:1)"),
        {},
        "pyspy",
    )
    ranked = rank([slow, hot])
    assert [f.kind for f in ranked] == ["cpu_hotspot", "slow_query"]
    assert hot.severity is Severity.CRITICAL and slow.severity is Severity.HIGH
    again = Finding.from_json(slow.to_json())
    assert again == slow
    assert slow.key() == "slow_query:42"


def test_key_without_a_location_ignores_the_figures_in_the_title() -> None:
    def starved(share: int) -> Finding:
        title = f"archon-server: all 2 pooled connections in use {share}% of the time"
        return Finding("pool_starvation", title, 20.0, "", "", Location(process="x"))

    assert starved(83).key() == starved(61).key()
    assert starved(83).key() != Finding("db_health", "Cache hit ratio 96.5%", 1.0, "", "").key()


def test_handler_of_finds_the_routed_application_function() -> None:
    site = "/venv/lib/python3.11/site-packages"
    stack = (
        ("serve", "/srv/app/main.py", 10),
        ("run", f"{site}/uvicorn/server.py", 60),
        ("app", f"{site}/starlette/routing.py", 70),
        ("run_endpoint_function", f"{site}/fastapi/routing.py", 212),
        ("create_app.<locals>.list_projects", "/srv/app/server.py", 230),
        ("load_sources", "/srv/app/server.py", 650),
        ("execute", f"{site}/psycopg/cursor_async.py", 90),
    )
    assert attribution.handler_of(stack) == "list_projects"
    assert attribution.handler_of(stack[:2]) is None
