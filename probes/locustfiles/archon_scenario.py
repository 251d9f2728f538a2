"""The Archon scenario: users that behave like the Archon UI, for ``locust -f``.

Runs INSIDE the Locust subprocess only (archon-diag passes it by path); nothing in
``diag`` or the rest of ``probes`` imports it.

Each user is one open browser tab, on one of the UI's pages (Locust splits the users by
the classes' ``weight``: with 10 users, 4 project boards, 3 knowledge-base pages, 3 agent
chats). A tab polls only what its page shows, on the UI's own schedule, and sends
``If-None-Match`` with the ETag it last saw on the polled routes that have one (as the
UI's query client does), so a server with cheap ETags answers 304:

- **project board** (``ProjectBoardTab``): ``GET /api/projects`` and
  ``/api/projects/{id}/tasks`` every 2 s, ``/api/projects/task-counts`` every 10 s,
  ``/api/health`` every 30 s, ``/api/progress/{id}`` every 1 s while an operation it
  started runs. It works on one of the projects listed first (the newest, where the
  work is) most of the time: edits and creates its tasks, filters the task list, and
  starts agent runs on that project (on ``--agents-host``; empty to skip) — and keeps
  editing the board while the agent works, as people do.
- **knowledge base** (``KnowledgeTab``): ``/api/knowledge-items/summary`` every 5 s,
  pages ``/api/knowledge-items`` and asks RAG questions (``POST /api/rag/query``).
- **agent chat** (``ChatTab``): one long-lived chat session, a message about every
  second (a conversation compressed in time), a new session every 100 messages.

IDs come from the responses (``{"projects": [{"id"...}]}``, ``{"tasks": [...]}``,
``{"session_id"...}``; other shapes are tolerated). Every dynamic URL has a fixed
``name=`` so Locust's stats stay bounded.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any, ClassVar

from locust import FastHttpUser, events

PROGRESS_EVERY_S = 1.0
OPERATION_S = 8.0  # how long the UI follows an operation's progress
FOCUS_TOP = 5  # the projects listed first (the newest) ...
FOCUS_SHARE = 0.8  # ... are where a board tab works this often
EDIT_AFTER_RUN_S = (0.3, 1.0)  # a task edit follows an agent run this soon (while it works)
CHAT_THINK_S = (0.3, 1.2)
CHAT_SESSION_MESSAGES = 100
STATUSES = ("todo", "doing", "review", "done")
QUESTIONS = (
    "how do I configure the crawler depth",
    "what does the MCP server expose",
    "vector search with pgvector ivfflat",
    "how are tasks ordered in a project",
    "retry policy for rate limited LLM calls",
    "supabase row level security",
)


def _add_options(parser: Any) -> None:
    parser.add_argument(
        "--agents-host", type=str, default="http://127.0.0.1:8052", include_in_web_ui=False,
        help="archon-diag Archon scenario: the agents service URL ('' to skip agent runs)",
    )  # fmt: skip


events.init_command_line_parser.add_listener(_add_options)  # type: ignore[no-untyped-call]


def _json(response: Any) -> Any:
    try:
        return response.json()
    except Exception:  # not JSON (an error page): no ids from it
        return None


def _items(payload: Any, key: str) -> list[dict[str, Any]]:
    """The list under ``key`` (or the payload itself when it is a list), dicts only."""
    if isinstance(payload, dict):
        payload = payload.get(key, payload.get("items", payload.get("data")))
    return [x for x in payload if isinstance(x, dict)] if isinstance(payload, list) else []


def _id(payload: Any, *keys: str) -> str | None:
    """The first id found under ``keys`` (nested one level: {"task": {"id": ...}})."""
    if not isinstance(payload, dict):
        return None
    for key in keys:
        value = payload.get(key)
        if isinstance(value, (str, int)) and value != "":
            return str(value)
        if isinstance(value, dict):
            nested = _id(value, "id", *keys)
            if nested:
                return nested
    return None


class _Tab(FastHttpUser):
    """One tab: polls due on their schedule, actions at random (exponential) intervals."""

    abstract = True
    # poll name -> seconds between polls (the Archon UI's intervals)
    POLLS: ClassVar[dict[str, float]] = {}
    # action -> mean seconds between occurrences per user
    ACTIONS: ClassVar[dict[str, float]] = {}

    def on_start(self) -> None:
        now = time.monotonic()
        # a random phase so users do not poll in lockstep
        self.due = {name: now + random.uniform(0, every) for name, every in self.POLLS.items()}
        self.next_action = {
            name: now + random.expovariate(1 / mean) for name, mean in self.ACTIONS.items()
        }
        self.etags: dict[str, str] = {}
        self.project_ids: list[str] = []
        self.project_id: str | None = None
        self.task_ids: list[str] = []
        self.operation: tuple[str, float] | None = None  # (progress id, until)
        self.next_progress = now
        opts = self.environment.parsed_options
        self.agents_host = str(getattr(opts, "agents_host", "") or "").rstrip("/")

    def wait_time(self) -> float:
        now = time.monotonic()
        upcoming = [*self.due.values(), *self.next_action.values()]
        if self.operation is not None:
            upcoming.append(self.next_progress)
        return max(0.05, min(upcoming, default=now + 1.0) - now)

    # -- the loop: whatever is due ------------------------------------------------------
    def _is_due(self, table: dict[str, float], name: str, every: float, now: float) -> bool:
        if table[name] > now:
            return False
        table[name] = max(table[name] + every, now + 0.5 * every)
        return True

    def run_due(self) -> None:
        now = time.monotonic()
        for name, every in self.POLLS.items():
            if self._is_due(self.due, name, every, now):
                getattr(self, f"poll_{name}")()
        if self.operation is not None and self.next_progress <= now:
            self.next_progress = now + PROGRESS_EVERY_S
            self.poll_progress()
        for name, mean in self.ACTIONS.items():
            if self.next_action[name] <= now:
                self.next_action[name] = now + random.expovariate(1 / mean)
                getattr(self, name)()

    tasks = [run_due]  # noqa: RUF012  (Locust reads the class attribute)

    # -- conditional GETs ---------------------------------------------------------------
    def _get_conditional(self, url: str, name: str) -> Any:
        """GET with the last ETag seen for ``url``; the JSON on 200, None on 304/errors."""
        headers = {"If-None-Match": self.etags[url]} if url in self.etags else None
        with self.client.get(url, name=name, headers=headers, catch_response=True) as r:
            if r.status_code == 304:
                r.success()
                return None
            if r.status_code == 200:
                etag = r.headers.get("ETag") if r.headers else None
                if etag:
                    self.etags[url] = etag
                r.success()
                return _json(r)
        return None

    # -- shared polls -------------------------------------------------------------------
    def poll_health(self) -> None:
        self.client.get("/api/health", name="/api/health")

    def poll_progress(self) -> None:
        assert self.operation is not None
        progress_id, until = self.operation
        with self.client.get(
            f"/api/progress/{progress_id}", name="/api/progress/{id}", catch_response=True
        ) as r:
            if r.status_code in (200, 404):  # 404: the operation finished and was dropped
                r.success()
                if r.status_code == 404:
                    until = 0.0
        if time.monotonic() >= until:
            self.operation = None


class ProjectBoardTab(_Tab):
    """The projects page: the board of one project, edited while agents work on it."""

    weight = 4
    POLLS: ClassVar[dict[str, float]] = {
        "projects": 2.0,
        "project_tasks": 2.0,
        "task_counts": 10.0,
        "health": 30.0,
    }
    ACTIONS: ClassVar[dict[str, float]] = {
        "update_task": 8.0,
        "list_tasks": 8.0,
        "create_task": 20.0,
        "agent_run": 20.0,
    }

    def _choose_project(self, ids: list[str]) -> str:
        if random.random() < FOCUS_SHARE:
            return random.choice(ids[:FOCUS_TOP])
        return random.choice(ids)

    def poll_projects(self) -> None:
        payload = self._get_conditional("/api/projects", "/api/projects")
        ids = [str(p["id"]) for p in _items(payload, "projects") if "id" in p]
        if ids:
            self.project_ids = ids
            if self.project_id not in ids:
                self.project_id = self._choose_project(ids)
                self.task_ids = []

    def poll_project_tasks(self) -> None:
        if not self.project_id:
            return
        url = f"/api/projects/{self.project_id}/tasks"
        payload = self._get_conditional(url, "/api/projects/{id}/tasks")
        ids = [str(t["id"]) for t in _items(payload, "tasks") if "id" in t]
        if ids:
            self.task_ids = ids[:50]

    def poll_task_counts(self) -> None:
        self.client.get("/api/projects/task-counts", name="/api/projects/task-counts")

    def list_tasks(self) -> None:
        params = [f"status={random.choice(STATUSES)}", f"page={random.randint(1, 3)}",
                  f"per_page={random.choice((20, 50))}"]  # fmt: skip
        if self.project_id:
            params.append(f"project_id={self.project_id}")
        if random.random() < 0.3:
            params.append(f"q={random.choice(('bug', 'crawl', 'ui', 'docs'))}")
        self.client.get("/api/tasks?" + "&".join(params), name="/api/tasks?filter")

    def create_task(self) -> None:
        if not self.project_id:
            return
        body = {
            "project_id": self.project_id,
            "title": f"load test task {uuid.uuid4().hex[:8]}",
            "description": "created by archon-diag's Archon scenario",
            "status": "todo",
            "assignee": "User",
            "feature": random.choice(("ui", "api", "rag")),
        }
        with self.client.post("/api/tasks", json=body, name="/api/tasks", catch_response=True) as r:
            if r.status_code in (200, 201):
                new_id = _id(_json(r), "task", "id", "task_id")
                if new_id:
                    self.task_ids.insert(0, new_id)
                r.success()

    def update_task(self) -> None:
        if not self.task_ids:
            return
        task_id = random.choice(self.task_ids[:20])
        self.client.put(
            f"/api/tasks/{task_id}",
            json={"status": random.choice(STATUSES)},
            name="/api/tasks/{id}",
        )

    def agent_run(self) -> None:
        if not self.agents_host or not self.project_id:
            return
        body = {"agent": "rag", "prompt": random.choice(QUESTIONS), "project_id": self.project_id}
        with self.client.post(
            f"{self.agents_host}/agents/run", json=body, name="/agents/run", catch_response=True
        ) as r:
            if r.status_code in (200, 201, 202):
                job = _id(_json(r), "job_id", "progress_id", "progressId", "id", "job")
                now = time.monotonic()
                if job:  # follow it like the UI does: /api/progress/{id} every second
                    self.operation = (job, now + OPERATION_S)
                    self.next_progress = now
                # and go on editing the board while the agent works on the project
                self.next_action["update_task"] = now + random.uniform(*EDIT_AFTER_RUN_S)
                r.success()


class KnowledgeTab(_Tab):
    """The knowledge base page: its summary polled, pages browsed, RAG questions asked."""

    weight = 3
    POLLS: ClassVar[dict[str, float]] = {"knowledge_summary": 5.0, "health": 30.0}
    ACTIONS: ClassVar[dict[str, float]] = {"knowledge_items": 6.0, "rag_query": 6.0}

    def poll_knowledge_summary(self) -> None:
        self.client.get(
            "/api/knowledge-items/summary?page=1&per_page=20",
            name="/api/knowledge-items/summary",
        )

    def knowledge_items(self) -> None:
        page = random.randint(1, 5)
        self.client.get(
            f"/api/knowledge-items?page={page}&per_page=20", name="/api/knowledge-items"
        )

    def rag_query(self) -> None:
        body = {"query": random.choice(QUESTIONS), "match_count": 5}
        self.client.post("/api/rag/query", json=body, name="/api/rag/query")


class ChatTab(FastHttpUser):
    """The agent chat: one long-lived session, a message about every second."""

    weight = 3

    def wait_time(self) -> float:
        return random.uniform(*CHAT_THINK_S)

    def on_start(self) -> None:
        self.chat_session: str | None = None
        self.sent = 0
        self.project_id: str | None = None

    def _open_session(self) -> None:
        with self.client.post(
            "/api/agent-chat/sessions",
            json={"agent_type": "rag", "project_id": self.project_id},
            name="/api/agent-chat/sessions",
            catch_response=True,
        ) as r:
            if r.status_code in (200, 201):
                self.chat_session = _id(_json(r), "session_id", "session", "id")
                self.sent = 0
                r.success()

    def chat(self) -> None:
        if self.chat_session is None or self.sent >= CHAT_SESSION_MESSAGES:
            self._open_session()
            if self.chat_session is None:
                return
        self.client.post(
            f"/api/agent-chat/sessions/{self.chat_session}/messages",
            json={"message": random.choice(QUESTIONS)},
            name="/api/agent-chat/sessions/{id}/messages",
        )
        self.sent += 1

    tasks = [chat]  # noqa: RUF012  (Locust reads the class attribute)
