"""Event-loop blocking and pool starvation detectors (diag.contention) on recorded inputs.

Fixtures (tests/fixtures/contention/) come from real `archon-diag demo` runs on this
machine: py-spy ``--idle`` windows of the stand-in's server (with the blocking_call fault)
and agents, and pg_stat_activity samples of the server with a starved pool of 2 and with
its normal pool of 10 under the same load.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from diag import contention
from probes.postgres.activity import ActivitySample, SessionRow
from probes.pyspy import PySpyWindow, parse_collapsed

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "contention"
LOAD_10_USERS = {"totals": {"rps": 9.8, "avg_ms": 980.0, "p95_ms": 2200.0}}


def wall(name: str, label: str) -> PySpyWindow:
    with gzip.open(FIXTURES / name, "rt", encoding="utf-8") as fh:
        stacks = parse_collapsed(fh)
    return PySpyWindow(
        pid=1,
        label=label,
        mode="wall",
        started=0.0,
        duration=5.0,
        rate=100,
        path=name,
        samples=stacks.total,
        distinct_stacks=len(stacks.stacks),
        bad_lines=stacks.bad_lines,
        stacks=stacks,
    )


def ash(name: str) -> list[ActivitySample]:
    data = json.loads((FIXTURES / name).read_text())
    out = []
    for t, rows in data["samples"]:
        sessions = tuple(
            SessionRow(
                pid=pid,
                datname="archon",
                usename="postgres",
                application_name=app,
                client_addr="127.0.0.1",
                client_port=None,
                state=state,
                wait_event_type=wait,
                wait_event=None,
                query_id=qid,
                xact_age_s=None,
                query_age_s=None,
                state_age_s=age,
                query=None,
            )
            for pid, app, state, wait, age, qid in rows
        )
        out.append(ActivitySample(t=t, cost_ms=1.0, max_connections=100,
                                  reserved_connections=3, sessions=sessions))  # fmt: skip
    return out


def _frame(func: str, file: str) -> tuple[str, str, int]:
    return (func, file, 1)


# --- event loop ---------------------------------------------------------------------------


def test_the_loop_thread_is_recognised_by_its_qualified_method_name() -> None:
    loop = _frame("BaseEventLoop._run_once", "/usr/lib/python3.11/asyncio/base_events.py")
    old = _frame("_run_once", "/usr/lib/python3.9/asyncio/base_events.py")
    other = _frame("Thread._bootstrap", "/usr/lib/python3.11/threading.py")
    assert contention._on_loop([loop])
    assert contention._on_loop([old])
    assert not contention._on_loop([other])


def test_a_sync_database_call_on_the_loop_is_found_at_its_code_location() -> None:
    window = wall("wall_server_blocking.txt.gz", "archon-server (pid 1)")
    findings = contention.event_loop_findings([window])
    assert [f.kind for f in findings] == ["event_loop_blocking"]
    f = findings[0]
    assert "summary_counts_blocking" in f.title
    assert f.location.code is not None and "summary_counts_blocking" in f.location.code
    assert f.location.code.endswith(")") and "server.py" in f.location.code
    assert f.location.process == "archon-server (pid 1)"
    # the share is the blocked samples over the loop thread's samples, as a percentage
    ev = f.evidence
    assert 0 < ev["blocked_samples"] < ev["loop_samples"] <= window.samples
    assert f.score == pytest.approx(100 * ev["blocked_samples"] / ev["loop_samples"], abs=0.01)
    assert f.score > 1  # this window caught several summaries in 5 s


def test_an_async_loop_that_only_awaits_is_not_blocked() -> None:
    window = wall("wall_agents.txt.gz", "archon-agents (pid 2)")
    assert window.stacks is not None
    assert any(contention._on_loop(s) for s in window.stacks.stacks)
    assert contention.event_loop_findings([window]) == []


def test_a_small_blocked_share_still_counts_but_below_the_floor_it_does_not() -> None:
    window = wall("wall_server_blocking.txt.gz", "archon-server (pid 1)")
    share = contention.event_loop_findings([window])[0].score / 100
    assert contention.event_loop_findings([window], min_share=share * 0.9)
    assert contention.event_loop_findings([window], min_share=share * 1.1) == []


# --- pool starvation ----------------------------------------------------------------------


def test_a_starved_pool_of_two_is_found_with_its_size_and_saturation() -> None:
    samples = ash("ash_pool2_starved.json")
    findings = contention.pool_findings(samples, [], LOAD_10_USERS)
    assert [(f.kind, f.location.process) for f in findings] == [
        ("pool_starvation", "archon-server")
    ]
    f = findings[0]
    assert f.evidence["pool_size"] == 2  # the per-request sync connection is not pooled
    assert f.evidence["saturated_share"] >= 0.6
    in_flight = 9.8 * 0.98
    assert f.evidence["requests_in_flight"] == pytest.approx(in_flight, abs=0.01)
    expected = 100 * f.evidence["saturated_share"] * (1 - 2 / in_flight) * 0.5
    assert f.score == pytest.approx(expected, abs=0.05)
    assert "all 2 pooled connections" in f.title
    assert "Little's law" in f.score_explanation


def test_the_servers_own_active_count_alone_would_miss_it() -> None:
    # the chatty client holds its connections between statements: on the server side they
    # are mostly idle (ClientRead) for a few ms, rarely both active at once
    samples = ash("ash_pool2_starved.json")
    assert contention.pool_findings(samples, [], LOAD_10_USERS, held_idle_s=0.0) == []


def test_a_pool_of_ten_under_the_same_load_is_not_starved() -> None:
    samples = ash("ash_pool10.json")
    assert contention.pool_findings(samples, [], LOAD_10_USERS) == []
    # nor without load figures (saturation alone decides then)
    assert contention.pool_findings(samples, [], None) == []


def test_no_queue_can_form_with_fewer_requests_in_flight_than_connections() -> None:
    samples = ash("ash_pool2_starved.json")
    light = {"totals": {"rps": 2.0, "avg_ms": 1000.0}}  # 2 in flight for 2 connections
    assert contention.pool_findings(samples, [], light) == []
    unknown = contention.pool_findings(samples, [], None)
    assert len(unknown) == 1 and unknown[0].evidence["requests_in_flight"] is None
    # any more requests than connections can queue: 2.2 in flight for 2 is a (low) finding
    (queued,) = contention.pool_findings(samples, [], {"totals": {"rps": 2.2, "avg_ms": 1000.0}})
    assert queued.evidence["requests_in_flight"] == 2.2
    (more,) = contention.pool_findings(samples, [], {"totals": {"rps": 4.0, "avg_ms": 1000.0}})
    assert 0 < queued.score < more.score / 4


def test_too_few_samples_give_no_verdict() -> None:
    samples = ash("ash_pool2_starved.json")[:19]
    assert contention.pool_findings(samples, [], LOAD_10_USERS) == []


def test_requests_in_flight_is_littles_law_over_the_totals() -> None:
    assert contention.requests_in_flight({"totals": {"rps": 4.0, "avg_ms": 250.0}}) == 1.0
    assert contention.requests_in_flight({"totals": {"rps": 0, "avg_ms": 250.0}}) is None
    assert contention.requests_in_flight(None) is None
    empty: dict[str, Any] = {}
    assert contention.requests_in_flight(empty) is None
