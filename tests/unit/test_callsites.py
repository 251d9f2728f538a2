"""Call sites from recorded ``py-spy dump --json --locals`` of the stand-in's server
(tests/fixtures/callsites, locals other than the query argument dropped) matched to the
statement texts pg_stat_statements reported in the same demo run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from diag import attribution
from diag.callsites import (
    Shape,
    attach_callsites,
    client_calls,
    match_statement,
    profiled_calls,
    session_shapes,
    sql_shape,
    statement_handlers,
)
from diag.findings import Finding, Location

FIXTURES = Path(__file__).parent.parent / "fixtures" / "callsites"

# normalized texts as pg_stat_statements showed them in the run the dumps come from
TEXTS = {
    -5281717998506818785: "SELECT ps.project_id, s.source_id, s.title, s.metadata, ps.notes "
    "FROM archon_project_sources ps JOIN archon_sources s ON s.source_id = ps.source_id "
    "WHERE ps.project_id = $1",
    -2460031943449661210: "SELECT count(*) FROM archon_project_sources WHERE source_id = $1",
    453295795951574147: "SELECT count(*) FROM archon_crawled_pages WHERE source_id = $1",
    -8746518323620613222: "SELECT id, url, content, metadata, source_id, embedding "
    "FROM archon_crawled_pages WHERE cluster_id = $1",
    6499778381549288038: "SELECT id, content FROM archon_crawled_pages "
    "WHERE cluster_id = $1 ORDER BY id LIMIT $2",
}
SHAPES = {q: Shape.of(t) for q, t in TEXTS.items()}


def _calls(name: str):
    return client_calls(json.loads((FIXTURES / name).read_text()))


def test_n_plus_one_loop_is_matched_to_its_statement_and_handler() -> None:
    (call,) = _calls("n_plus_one_loop.json")
    assert call.site.startswith("load_sources_one_query_per_project (")
    assert call.handler == "list_projects"
    assert call.truncated  # py-spy cut the text: matched as a prefix
    assert match_statement(call, SHAPES) == -5281717998506818785
    eps = ["GET /api/projects", "POST /api/agent-chat/sessions/{id}/messages", "GET /api/tasks"]
    assert attribution.match_endpoint(call.handler, eps) == "GET /api/projects"


def test_sync_call_inside_an_async_handler() -> None:
    (call,) = _calls("sync_call_in_async_handler.json")
    assert call.site.startswith("summary_counts_blocking (")
    assert call.handler == "knowledge_summary"
    assert not call.truncated
    # exact shape: not confused with the same count over archon_crawled_pages
    assert match_statement(call, SHAPES) == -2460031943449661210


def test_a_short_prefix_shared_by_two_statements_is_not_guessed() -> None:
    (call,) = _calls("rag_fetch.json")
    assert call.handler == "rag_query"
    assert match_statement(call, SHAPES) == -8746518323620613222
    twin = -1
    shapes = {**SHAPES, twin: Shape.of(TEXTS[-8746518323620613222] + " AND id > $2")}
    if call.truncated:
        assert match_statement(call, shapes) is None
    else:
        assert match_statement(call, shapes) == -8746518323620613222


def test_activity_text_with_redacted_literals_and_ellipsis() -> None:
    (call,) = _calls("n_plus_one_loop.json")
    # pg_stat_activity's text as the activity probe keeps it: literals redacted, cut with …
    shown = (
        "SELECT ps.project_id, s.source_id, s.title, s.metadata, ps.notes FROM "
        "archon_project_sources ps JOIN archon_sources s ON s.source_id = ps.s…"
    )
    other = "SELECT count(*) FROM archon_crawled_pages WHERE source_id = $?"
    sessions = [
        SimpleNamespace(query_id=11, query=shown, state="idle in transaction"),
        SimpleNamespace(query_id=12, query=other, state="active"),
        SimpleNamespace(query_id=13, query=None, state="idle"),
    ]
    live = session_shapes(sessions)
    assert set(live) == {11, 12} and live[11].truncated
    assert match_statement(call, live) == 11


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("SELECT * FROM t WHERE a = %s", "select *  from t\n where a = $1"),
        ("SELECT * FROM t WHERE a = %(id)s AND b = 'x'", "SELECT * FROM t WHERE a = $1 AND b = $2"),
        ("SELECT * FROM t LIMIT 10", "SELECT * FROM t LIMIT $1"),
        ("SELECT * FROM t2 WHERE a = $?", "SELECT * FROM t2 WHERE a = 5"),
    ],
)
def test_shapes_agree_across_client_and_server_spellings(a: str, b: str) -> None:
    assert sql_shape(a) == sql_shape(b)


def test_table_names_with_digits_keep_them() -> None:
    assert sql_shape("SELECT * FROM t2") != sql_shape("SELECT * FROM t3")


def test_threads_outside_a_database_call_give_nothing() -> None:
    threads = [
        {
            "frames": [
                {"name": "select", "filename": "/usr/lib/python3.11/selectors.py", "line": 468,
                 "locals": [{"name": "query", "repr": "\"SELECT 1 FROM some_table_x\""}]},
                {"name": "main", "filename": "/srv/app/main.py", "line": 3, "locals": []},
            ]
        },
        {"frames": []},
    ]  # fmt: skip
    assert client_calls(threads) == []


def _n_plus_one_finding() -> Finding:
    """The demo's N+1 as the database analysis reports it before call sites are known:
    placed on the busiest endpoint that could have run it (figures from a real run)."""
    from diag.dbanalysis import _n_plus_one_finding

    evidence = {
        "calls": 45500, "calls_per_s": 745.65, "total_ms": 1548.522, "mean_ms": 0.034,
        "rows_per_call": 3.0, "share_of_db_time": 0.0508, "window_s": 61.02,
        "calls_per_request_if_from": {
            "POST /api/agent-chat/sessions/{id}/messages": 130.37,
            "GET /api/projects": 255.62,
        },
        "requests_in_window": 1121,
    }  # fmt: skip
    sql = TEXTS[-5281717998506818785]
    return _n_plus_one_finding(
        sql[:60],
        Location(queryid=-5281717998506818785, sql=sql),
        evidence,
        "POST /api/agent-chat/sessions/{id}/messages",
    )


def test_a_caught_call_site_places_the_n_plus_one_on_its_endpoint() -> None:
    qid = -5281717998506818785
    site = "load_sources_one_query_per_project (diag/demo/server.py:659)"
    events = [
        {"queryid": qid, "site": site, "handler": "list_projects", "process": "server"},
        {"queryid": qid, "site": site, "handler": "list_projects", "process": "server"},
        {"queryid": 8, "site": "other (app/db.py:9)", "handler": None, "process": "server"},
    ]
    f = _n_plus_one_finding()
    assert f.location.endpoint == "POST /api/agent-chat/sessions/{id}/messages"
    load = {
        "endpoints": [
            {"name": "GET /api/projects", "requests": 178},
            {"name": "POST /api/agent-chat/sessions/{id}/messages", "requests": 349},
        ]
    }
    handlers = statement_handlers(events)
    assert handlers == {qid: {"list_projects": 2}}
    (g,) = attribution.attach_endpoints([f], {}, handlers, load)
    assert g.location.endpoint == "GET /api/projects"
    assert g.title.startswith("N+1 pattern (255.6x per request of GET /api/projects)")
    assert g.evidence["calls_per_request"] == 255.62
    assert "178 requests of GET /api/projects" in g.score_explanation
    assert g.score > f.score  # more calls per request: more of it saved by batching
    (h,) = attach_callsites([g], events)
    assert h.location.code == site
    assert h.evidence["issued_from_samples"] == 2


def test_a_call_site_naming_no_candidate_endpoint_leaves_the_finding() -> None:
    f = _n_plus_one_finding()
    handlers = statement_handlers(
        [{"queryid": f.location.queryid, "site": "x (a.py:1)", "handler": "rag_query"}]
    )
    load = {"endpoints": [{"name": "POST /api/rag/query", "requests": 9000}]}
    (g,) = attribution.attach_endpoints([f], {}, handlers, load)
    assert g.location.endpoint == f.location.endpoint and g.title == f.title


APP_SOURCE = """
import psycopg

CHILDREN = "SELECT g AS child_id, %s AS parent_id FROM generate_series(1, 3) AS g"


async def load_sources(cur, projects):
    for project in projects:
        await cur.execute(
            "SELECT ps.project_id, s.source_id, s.title, s.metadata, ps.notes "
            "FROM archon_project_sources ps JOIN archon_sources s "
            "ON s.source_id = ps.source_id WHERE ps.project_id = %s",
            (project["id"],),
        )


def children(cur, parent):
    cur.execute(CHILDREN, (parent,))
    cur.execute(query=f"SELECT {parent} FROM dynamic_table_name")
    log("selected children of the parent row")
"""


def test_the_statement_a_call_passes_is_read_from_its_source(tmp_path: Path) -> None:
    from diag.callsites import source_statement

    app = tmp_path / "app.py"
    app.write_text(APP_SOURCE)
    # the await line of a call spanning five lines, and a line inside it
    assert sql_shape(source_statement(str(app), 9) or "") == sql_shape(TEXTS[-5281717998506818785])
    assert source_statement(str(app), 11) == source_statement(str(app), 9)
    assert source_statement(str(app), 18) and "generate_series" in source_statement(str(app), 18)
    assert source_statement(str(app), 19) is None  # an f-string: built at run time
    assert source_statement(str(app), 20) is None  # a string, but not SQL
    assert source_statement(str(app), 8) is None  # the for line: no call
    assert source_statement(str(tmp_path / "gone.py"), 9) is None
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n    cur.execute('SELECT 1 FROM t')\n")
    assert source_statement(str(broken), 2) is None


def test_recorded_samples_in_the_client_count_for_the_statement_their_source_passes(
    tmp_path: Path,
) -> None:
    """Stacks as py-spy records them in the demo server (root first; the route handler
    under starlette, the site's await line, psycopg below), here over a copy of the call."""
    app = tmp_path / "app.py"
    app.write_text(APP_SOURCE)
    site_py = "/venv/lib/python3.11/site-packages"
    routing = [
        ("run", f"{site_py}/uvicorn/server.py", 86),
        ("app", f"{site_py}/starlette/routing.py", 74),
        ("run_endpoint_function", f"{site_py}/fastapi/routing.py", 212),
        ("create_app.<locals>.list_projects", "/srv/server.py", 251),
        ("load_sources", str(app), 9),
    ]
    execute = [("AsyncCursor.execute", f"{site_py}/psycopg/cursor_async.py", 113)]
    stacks = {
        tuple(routing + execute): 40,
        tuple(routing + execute + [("AsyncConnection.wait", f"{site_py}/psycopg/x.py", 532)]): 9,
        tuple(routing): 100,  # on the CPU in the site itself: not a client call
        tuple([*routing[:3], ("children", str(app), 19), *execute]): 7,  # no text: not counted
    }
    window = SimpleNamespace(pid=42, label="server (pid 42)", stacks=SimpleNamespace(stacks=stacks))
    qid = -5281717998506818785
    events = profiled_calls([window, SimpleNamespace(stacks=None)], SHAPES)
    assert [(e["queryid"], e["handler"], e["samples"]) for e in events] == [
        (qid, "list_projects", 49)
    ]
    assert events[0]["site"].startswith("load_sources (")
    # weighted by samples where call sites meet route handlers
    dumped = {"queryid": qid, "site": events[0]["site"], "handler": "list_projects"}
    assert statement_handlers([*events, dumped]) == {qid: {"list_projects": 50}}
    f = _n_plus_one_finding()
    (g,) = attach_callsites([f], [*events, dumped])
    assert g.evidence["issued_from_samples"] == 50
