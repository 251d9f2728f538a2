"""The Archon stand-in (diag/demo): every route, the agent queue, and each fault proven by
its symptom (measured from outside: pg_stat_statements, plans, pg_stat_activity, RSS,
CPU time, latency, Server-Timing) -- and the same measurements under ``none`` show none.
"""

from __future__ import annotations

import json
import shutil
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest

from diag import cli, pgembed
from diag.demo import stack
from diag.demo.agents import HOT_PROJECT_IDS
from diag.demo.stack import DemoTarget

pytestmark = pytest.mark.integration

Factory = Callable[[str], DemoTarget]
PER_PROJECT_SOURCES = "%WHERE ps.project_id = $1"
BATCHED_SOURCES = "%WHERE ps.project_id = ANY($1)"
FULL_TASKS_FETCH = "SELECT id, project_id, parent_task_id%ORDER BY task_order, created_at"


@pytest.fixture(scope="module")
def faulty(demo_target_factory: Factory) -> DemoTarget:
    return demo_target_factory("all")


@pytest.fixture(scope="module")
def clean(demo_target_factory: Factory) -> DemoTarget:
    return demo_target_factory("none")


def _calls(target: DemoTarget, pattern: str) -> int:
    """Total pg_stat_statements calls in the target's database for statements LIKE pattern."""
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE dbid = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) AND query LIKE %s",
            (pattern,),
        ).fetchone()
    return int(row[0]) if row else 0


def _scalar(target: DemoTarget, query: str, params: Any = None) -> Any:
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def _first_project(target: DemoTarget) -> str:
    return str(HOT_PROJECT_IDS[0])


# --- every route answers, Archon-shaped -------------------------------------------------


@pytest.mark.parametrize("which", ["faulty", "clean"])
def test_every_route_answers_archon_shaped_json(which: str, request: pytest.FixtureRequest) -> None:
    target: DemoTarget = request.getfixturevalue(which)
    with httpx.Client(base_url=target.server_url, timeout=30) as http:
        assert http.get("/health").json()["status"] == "healthy"
        health = http.get("/api/health").json()
        assert health["ready"] is True and health["pool"]["max_size"] >= 1

        projects = http.get("/api/projects")
        assert projects.status_code == 200 and projects.headers["etag"]
        body = projects.json()
        assert (
            body["count"]
            == len(body["projects"])
            == _scalar(target, "SELECT count(*) FROM archon_projects")
        )
        first = body["projects"][0]
        assert {"id", "title", "technical_sources", "business_sources", "docs"} <= set(first)
        assert first["id"] == str(HOT_PROJECT_IDS[0])  # newest first: the hot projects lead
        cached = http.get("/api/projects", headers={"If-None-Match": projects.headers["etag"]})
        assert cached.status_code == 304
        pid = first["id"]
        assert http.get(f"/api/projects/{pid}").json()["id"] == pid
        assert http.get(f"/api/projects/{HOT_PROJECT_IDS[0].hex[::-1]}").status_code in (404, 422)

        tasks = http.get(f"/api/projects/{pid}/tasks")
        assert tasks.status_code == 200 and tasks.json()
        assert all(t["project_id"] == pid and not t["archived"] for t in tasks.json())
        again = http.get(
            f"/api/projects/{pid}/tasks", headers={"If-None-Match": tasks.headers["etag"]}
        )
        assert again.status_code == 304

        counts = http.get("/api/projects/task-counts").json()
        assert set(counts[pid]) == {"todo", "doing", "review", "done"}

        page = http.get("/api/tasks", params={"status": "todo", "per_page": 7, "page": 2}).json()
        assert len(page["tasks"]) == 7 and all(t["status"] == "todo" for t in page["tasks"])
        assert page["pagination"]["page"] == 2 and page["pagination"]["total"] > 7
        word = page["tasks"][0]["title"].split()[0].lower()
        found = http.get("/api/tasks", params={"q": word, "project_id": pid}).json()
        assert all(word in t["title"].lower() for t in found["tasks"])
        assert http.get("/api/tasks", params={"status": "bogus"}).status_code == 422

        created = http.post(
            "/api/tasks", json={"project_id": pid, "title": f"new {which}", "status": "doing"}
        ).json()["task"]
        assert created["status"] == "doing" and created["project_id"] == pid
        updated = http.put(f"/api/tasks/{created['id']}", json={"status": "review"}).json()
        assert updated["task"]["status"] == "review"
        assert http.put(f"/api/tasks/{HOT_PROJECT_IDS[1]}", json={"title": "x"}).status_code == 404

        items = http.get("/api/knowledge-items", params={"per_page": 5}).json()
        assert len(items["items"]) == 5 and items["items"][0]["metadata"]["chunks_count"] > 0
        summary = http.get("/api/knowledge-items/summary", params={"per_page": 5}).json()
        assert len(summary["items"]) == 5 and summary["items"][0]["chunks_count"] > 0

        rag = http.post("/api/rag/query", json={"query": "retry backoff", "match_count": 4}).json()
        assert len(rag["results"]) == 4
        sims = [r["similarity"] for r in rag["results"]]
        assert sims == sorted(sims, reverse=True) and 0 < sims[0] <= 1.0

        session = http.post("/api/agent-chat/sessions", json={"agent_type": "rag"}).json()
        reply = http.post(
            f"/api/agent-chat/sessions/{session['session_id']}/messages", json={"message": "hi"}
        ).json()
        assert reply["message"]["role"] == "assistant" and reply["message_count"] == 2
        assert (
            http.post("/api/agent-chat/sessions/nope/messages", json={"message": "x"}).status_code
            == 404
        )
        assert http.get("/api/progress/999999999").status_code == 404


def test_same_query_gives_same_answer_in_both_modes(faulty: DemoTarget, clean: DemoTarget) -> None:
    """The faults change how the work is done, never the answer."""
    question = {"query": "vector index latency", "match_count": 5}
    answers = []
    for target in (faulty, clean):
        rag = httpx.post(target.server_url + "/api/rag/query", json=question, timeout=30).json()
        answers.append([(r["id"], r["similarity"]) for r in rag["results"]])
    assert [a[0] for a in answers[0]] == [a[0] for a in answers[1]]
    assert all(abs(a[1] - b[1]) < 1e-4 for a, b in zip(answers[0], answers[1], strict=True))


# --- the agent queue --------------------------------------------------------------------


def test_agent_queue_claims_jobs_and_records_kpis(faulty: DemoTarget) -> None:
    with httpx.Client(base_url=faulty.agents_url, timeout=30) as http:
        ids = [
            http.post("/agents/run", json={"prompt": f"job {n}", "max_tokens": 12}).json()["job_id"]
            for n in range(8)
        ]
        deadline = time.monotonic() + 60
        jobs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            jobs = [http.get(f"/agents/jobs/{i}").json() for i in ids]
            if all(j["status"] in ("done", "failed") for j in jobs):
                break
            time.sleep(0.2)
        stats = http.get("/agents/stats").json()
    assert [j["status"] for j in jobs] == ["done"] * 8, jobs
    for job in jobs:
        assert job["attempts"] == 1  # SKIP LOCKED: never claimed twice
        assert 0 <= job["queue_wait_ms"] <= job["completion_ms"]
        assert 0 < job["ttft_ms"] <= job["llm_latency_ms"] <= job["completion_ms"]
        assert job["tool_ms"] > 0 and job["tokens"] >= 6 and job["result"]
    assert sum(j["llm_retries"] for j in jobs) > 0  # 30 % of calls answered 429, retried
    # three workers: jobs ran side by side, so some waited in the queue less than a job takes
    starts = sorted(j["started_at"] for j in jobs)
    ends = sorted(j["finished_at"] for j in jobs)
    assert starts[1] < ends[0]
    assert stats["done"] >= 8 and stats["ttft_p50"] > 0 and stats["completion_p95"] > 0
    progress = httpx.get(f"{faulty.server_url}/api/progress/{ids[0]}", timeout=10).json()
    assert progress["status"] == "completed" and progress["progress"] == 100


# --- n_plus_one: the per-project statement's calls grow with the projects fetched --------


def test_n_plus_one_one_statement_per_project(faulty: DemoTarget, clean: DemoTarget) -> None:
    for target, per_project_expected in ((faulty, True), (clean, False)):
        n_projects = int(_scalar(target, "SELECT count(*) FROM archon_projects"))
        before = _calls(target, PER_PROJECT_SOURCES), _calls(target, BATCHED_SOURCES)
        for _ in range(2):
            assert httpx.get(target.server_url + "/api/projects", timeout=30).status_code == 200
        after = _calls(target, PER_PROJECT_SOURCES), _calls(target, BATCHED_SOURCES)
        if per_project_expected:
            assert after[0] - before[0] == 2 * n_projects
            assert after[1] == before[1]
        else:
            assert after[0] == before[0]
            assert after[1] - before[1] == 2


# --- missing_index: the per-project tasks plan is a Seq Scan ----------------------------


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(_plan_nodes(child))
    return nodes


def _blocks_and_calls(target: DemoTarget, pattern: str) -> tuple[int, int]:
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(shared_blks_hit + shared_blks_read), 0), coalesce(sum(calls), 0) "
            "FROM pg_stat_statements WHERE dbid = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) AND query LIKE %s",
            (pattern,),
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def test_missing_index_per_project_tasks_scan_the_table(
    faulty: DemoTarget, clean: DemoTarget
) -> None:
    pid = _first_project(faulty)
    query = (
        "SELECT * FROM archon_tasks WHERE project_id = %s AND archived = false "
        "ORDER BY task_order, created_at"
    )
    found = {}
    for name, target in (("faulty", faulty), ("clean", clean)):
        before = _blocks_and_calls(target, FULL_TASKS_FETCH)
        for _ in range(3):
            assert httpx.get(f"{target.server_url}/api/projects/{pid}/tasks", timeout=30)
        after = _blocks_and_calls(target, FULL_TASKS_FETCH)
        with psycopg.connect(target.dsn, autocommit=True) as conn:
            row = conn.execute("EXPLAIN (FORMAT JSON) " + query, (pid,)).fetchone()
        assert row is not None
        nodes = _plan_nodes(row[0][0]["Plan"])
        assert after[1] - before[1] == 3
        found[name] = (
            {n["Node Type"] for n in nodes if n.get("Relation Name") == "archon_tasks"},
            {n.get("Index Name") for n in nodes},
            (after[0] - before[0]) / 3,  # buffers touched per request's fetch
        )
    assert found["faulty"][0] == {"Seq Scan"}, found
    assert "Seq Scan" not in found["clean"][0], found
    assert "idx_archon_tasks_project_id" in found["clean"][1], found
    assert found["faulty"][2] > 2 * found["clean"][2], found


# --- etag_hotspot: a 304 still pays for the full fetch and a json.dumps ------------------


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def test_etag_hotspot_full_fetch_and_dump_behind_every_304(
    faulty: DemoTarget, clean: DemoTarget
) -> None:
    pid = _first_project(faulty)
    per_304: dict[str, tuple[int, float]] = {}
    for name, target in (("faulty", faulty), ("clean", clean)):
        url = f"{target.server_url}/api/projects/{pid}/tasks"
        with httpx.Client(timeout=30) as http:
            etag = http.get(url).headers["etag"]
            fetches = _calls(target, FULL_TASKS_FETCH)
            cpu = _cpu_seconds(target.pids["server"])
            for _ in range(20):
                assert http.get(url, headers={"If-None-Match": etag}).status_code == 304
            per_304[name] = (
                _calls(target, FULL_TASKS_FETCH) - fetches,
                (_cpu_seconds(target.pids["server"]) - cpu) / 20,
            )
    assert per_304["faulty"][0] == 20  # every 304 re-read every task of the project
    assert per_304["clean"][0] == 0  # the version check answered without the fetch
    assert per_304["faulty"][1] > 2 * per_304["clean"][1], per_304


# --- python_similarity: the RAG query burns CPU in a Python loop -------------------------


def test_python_similarity_costs_cpu_per_query(faulty: DemoTarget, clean: DemoTarget) -> None:
    cost = {}
    for name, target in (("faulty", faulty), ("clean", clean)):
        with httpx.Client(timeout=30) as http:
            http.post(target.server_url + "/api/rag/query", json={"query": "warm up"})
            cpu = _cpu_seconds(target.pids["server"])
            for n in range(10):
                body = {"query": f"question number {n}", "match_count": 5}
                assert http.post(target.server_url + "/api/rag/query", json=body).status_code == 200
            cost[name] = (_cpu_seconds(target.pids["server"]) - cpu) / 10
    assert cost["faulty"] > 4 * cost["clean"], cost
    assert cost["faulty"] > 0.01, cost  # ~1000 chunks x 128 dims in pure Python


# --- chat_session_leak: RSS grows with messages, flat without the fault ------------------


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def _post_messages(target: DemoTarget, count: int) -> None:
    with httpx.Client(base_url=target.server_url, timeout=30) as http:
        sessions = [
            http.post("/api/agent-chat/sessions", json={}).json()["session_id"] for _ in range(4)
        ]

    def post(n: int) -> None:
        with httpx.Client(base_url=target.server_url, timeout=30) as http:
            for i in range(n, count, 4):
                sid = sessions[i % len(sessions)]
                reply = http.post(
                    f"/api/agent-chat/sessions/{sid}/messages", json={"message": f"message {i}"}
                )
                assert reply.status_code == 200

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(post, range(4)))


def test_chat_session_leak_grows_rss_with_messages(faulty: DemoTarget, clean: DemoTarget) -> None:
    growth = {}
    for name, target in (("faulty", faulty), ("clean", clean)):
        _post_messages(target, 60)  # warm-up: pools, caches, lazy imports
        before = _rss_mb(target.pids["server"])
        _post_messages(target, 400)
        growth[name] = _rss_mb(target.pids["server"]) - before
    # ~400 x 60 KB of retained context
    assert growth["faulty"] > 8, growth
    assert growth["clean"] < 3, growth


# --- lock_contention: PUT /api/tasks waits on the worker's project row lock --------------


def _put_while_agent_runs(target: DemoTarget) -> tuple[float, set[str]]:
    project = HOT_PROJECT_IDS[0]
    task_id = httpx.get(f"{target.server_url}/api/projects/{project}/tasks", timeout=30).json()[0][
        "id"
    ]
    job = httpx.post(
        target.agents_url + "/agents/run",
        json={"project_id": str(project), "max_tokens": 150, "prompt": "lock test"},
        timeout=30,
    ).json()["job_id"]
    deadline = time.monotonic() + 20
    while (
        httpx.get(f"{target.agents_url}/agents/jobs/{job}", timeout=10).json()["status"] == "queued"
    ):
        assert time.monotonic() < deadline, "the job was never claimed"
        time.sleep(0.05)
    time.sleep(0.2)  # the worker is now waiting on the LLM

    waits: set[str] = set()
    done = threading.Event()

    def sample() -> None:
        with psycopg.connect(target.dsn, autocommit=True) as conn:
            while not done.is_set():
                rows = conn.execute(
                    "SELECT wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = 'archon-server' "
                    "AND wait_event_type = 'Lock'"
                ).fetchall()
                waits.update(f"{r[0]}:{r[1]}" for r in rows)
                time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    try:
        reply = httpx.put(
            f"{target.server_url}/api/tasks/{task_id}", json={"status": "doing"}, timeout=60
        )
    finally:
        elapsed = time.perf_counter() - started
        done.set()
        sampler.join()
    assert reply.status_code == 200
    return elapsed, waits


def test_lock_contention_put_waits_for_the_agent(faulty: DemoTarget, clean: DemoTarget) -> None:
    faulty_s, faulty_waits = _put_while_agent_runs(faulty)
    clean_s, clean_waits = _put_while_agent_runs(clean)
    assert any(w.startswith("Lock:") for w in faulty_waits), faulty_waits
    assert faulty_s > 0.5, faulty_s
    assert not clean_waits, clean_waits
    assert clean_s < faulty_s / 2, (clean_s, faulty_s)


# --- pool_starvation: requests queue for a connection ------------------------------------


def _pool_waits_ms(target: DemoTarget, concurrency: int, per_thread: int) -> list[float]:
    def worker(_n: int) -> list[float]:
        out = []
        with httpx.Client(base_url=target.server_url, timeout=60) as http:
            for _ in range(per_thread):
                reply = http.get("/api/tasks", params={"per_page": 50, "status": "todo"})
                timing = reply.headers["server-timing"]  # "pool;dur=12.34"
                out.append(float(timing.split("dur=")[1]))
        return out

    with ThreadPoolExecutor(concurrency) as pool:
        return [w for chunk in pool.map(worker, range(concurrency)) for w in chunk]


def test_pool_starvation_requests_wait_for_a_connection(
    faulty: DemoTarget, clean: DemoTarget
) -> None:
    starved = _pool_waits_ms(faulty, concurrency=8, per_thread=6)
    healthy = _pool_waits_ms(clean, concurrency=8, per_thread=6)
    waited = [w for w in starved if w > 1.0]
    assert len(waited) >= len(starved) // 3, starved
    assert statistics.mean(starved) > 5 * max(statistics.mean(healthy), 0.2), (starved, healthy)
    assert max(healthy) < 50, healthy
    stats = httpx.get(faulty.server_url + "/api/health", timeout=10).json()["pool"]
    assert stats["max_size"] == 2 and stats["requests_wait_ms"] > 0


# --- blocking_call: a cheap request stalls while the blocking handler runs ---------------


def _health_latency_during_summary(target: DemoTarget, rounds: int = 12) -> float:
    latencies = []
    with httpx.Client(base_url=target.server_url, timeout=30) as http:
        http.get("/health")
        for _ in range(rounds):
            with ThreadPoolExecutor(1) as pool:
                summary = pool.submit(
                    http.get, "/api/knowledge-items/summary", params={"per_page": 100}
                )
                time.sleep(0.004)  # let the summary request reach the handler
                started = time.perf_counter()
                http.get("/health")
                latencies.append(time.perf_counter() - started)
                assert summary.result().status_code == 200
    return statistics.median(latencies) * 1000


def test_blocking_call_stalls_the_event_loop(faulty: DemoTarget, clean: DemoTarget) -> None:
    faulty_ms = _health_latency_during_summary(faulty)
    clean_ms = _health_latency_during_summary(clean)
    assert faulty_ms > 3 * clean_ms and faulty_ms > 8, (faulty_ms, clean_ms)


# --- the command: up --json, idempotent up, errors, down leaves nothing ------------------


def _listening(pid: int) -> list[str]:
    return [
        c.laddr.ip
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]


def test_demo_target_command_up_status_down(
    pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = Path(tempfile.mkdtemp(prefix="archon-diag-test-demo-cli-", dir="/tmp"))
    server_port, agents_port = pgembed.free_port(), pgembed.free_port()
    argv = [
        "demo-target", "up", "--dir", str(base), "--dsn", pg_dsn, "--dbname", "archon_test_cli",
        "--size", "small", "--faults", "none", "--server-port", str(server_port),
        "--agents-port", str(agents_port), "--json",
    ]  # fmt: skip
    pids: dict[str, int] = {}
    try:
        assert cli.main(argv) == 0
        info = json.loads(capsys.readouterr().out)
        assert set(info) == {"dsn", "server_url", "agents_url", "pids"}
        assert info["server_url"] == f"http://127.0.0.1:{server_port}"
        pids = info["pids"]
        procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        assert "diag.demo.server" in " ".join(procs["server"].cmdline())
        assert "diag.demo.agents" in " ".join(procs["agents"].cmdline())
        for pid in pids.values():
            assert _listening(pid) and all(ip == "127.0.0.1" for ip in _listening(pid))
        assert httpx.get(info["agents_url"] + "/health", timeout=10).status_code == 200

        assert cli.main(argv) == 0  # up again: the same processes
        assert json.loads(capsys.readouterr().out)["pids"] == pids
        assert cli.main(["demo-target", "status", "--dir", str(base), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["pids"] == pids

        other = [a if a != "none" else "all" for a in argv]
        assert cli.main(other) == 2  # running with other faults: one line, exit 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "down" in err
    finally:
        assert cli.main(["demo-target", "down", "--dir", str(base)]) == 0
    capsys.readouterr()
    for pid in pids.values():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert stack.status(base) is None
    assert cli.main(["demo-target", "status", "--dir", str(base)]) == 3
    assert not (base / "state.json").exists()
    shutil.rmtree(base, ignore_errors=True)


def test_demo_target_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo-target", "up", "--faults", "n_plus_one,bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bogus" in err and "pool_starvation" in err

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        base = Path(tempfile.mkdtemp(prefix="archon-diag-test-demo-busy-", dir="/tmp"))
        code = cli.main(
            [
                "demo-target",
                "up",
                "--dir",
                str(base),
                "--server-port",
                str(port),
                "--faults",
                "none",
            ]
        )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"port {port}" in err and "--server-port" in err
    assert not (base / "pg").exists()  # refused before starting anything
    shutil.rmtree(base, ignore_errors=True)
