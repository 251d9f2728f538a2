"""The Archon stand-in's API server: FastAPI over PostgreSQL (psycopg 3 + a connection pool).

Serves Archon's v1 routes with Archon-shaped JSON. Each fault switch changes exactly one
code path, in a function named for what it does wrong (``load_sources_one_query_per_project``,
``compute_etag``, ``python_cosine_similarity``, ``summary_counts_blocking``, the
module-level ``CHAT_SESSIONS`` dict); with no faults every route takes the efficient path.
Every response carries ``Server-Timing: pool;dur=<ms>``: the time spent waiting for a
pooled connection (the pool_starvation symptom, visible to any HTTP client).

Run: ``python -m diag.demo.server --port 8181 --faults all`` (DSN in $ARCHON_DEMO_DSN).
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import math
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from diag.demo.common import base_parser, jsonable, resolve_common, row_json, serve

APPLICATION_NAME = "archon-server"
DEFAULT_PORT = 8181
DEFAULT_POOL_SIZE = 10
STARVED_POOL_SIZE = 2
CHAT_CONTEXT_CHUNKS = 80  # ~60 KB of retrieved context per chat message
BOUNDED_SESSIONS = 256
BOUNDED_MESSAGES = 20

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The chat_session_leak fault: every session and every message (with its retrieved
# context) kept at module level, never evicted.
CHAT_SESSIONS: dict[str, dict[str, Any]] = {}

_pool_waits: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "archon_pool_waits", default=None
)


@dataclass(frozen=True)
class ServerSettings:
    dsn: str
    faults: frozenset[str]
    pool_size: int = DEFAULT_POOL_SIZE


# --- request bodies ---------------------------------------------------------------------


class TaskCreate(BaseModel):
    project_id: uuid.UUID
    title: str
    description: str = ""
    status: str = "todo"
    assignee: str = "User"
    task_order: int = 0
    feature: str | None = None


class TaskUpdate(BaseModel):
    title: str | None = None
    description: str | None = None
    status: str | None = None
    assignee: str | None = None
    task_order: int | None = None
    feature: str | None = None


class RagQuery(BaseModel):
    query: str
    match_count: int = Field(default=5, ge=1, le=50)
    source: str | None = None


class ChatSessionCreate(BaseModel):
    agent_type: str = "rag"
    project_id: uuid.UUID | None = None


class ChatMessage(BaseModel):
    message: str


_TASK_FIELDS = ("title", "description", "status", "assignee", "task_order", "feature")
_STATUSES = ("todo", "doing", "review", "done")
_TASK_COLUMNS = (
    "id, project_id, parent_task_id, title, description, status, assignee, task_order, "
    "feature, sources, code_examples, archived, archived_at, created_at, updated_at"
)


# --- the Server-Timing middleware -------------------------------------------------------


class PoolTimingMiddleware:
    """Adds ``Server-Timing: pool;dur=<ms waiting for a connection>`` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        waits: list[float] = []
        token = _pool_waits.set(waits)

        async def send_with_timing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                value = f"pool;dur={sum(waits) * 1000:.2f}".encode()
                headers.append((b"server-timing", value))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_timing)
        finally:
            _pool_waits.reset(token)


# --- the application --------------------------------------------------------------------


def create_app(settings: ServerSettings) -> FastAPI:
    faults = settings.faults
    pool_size = STARVED_POOL_SIZE if "pool_starvation" in faults else settings.pool_size
    pool: AsyncConnectionPool = AsyncConnectionPool(
        settings.dsn,
        min_size=pool_size,
        max_size=pool_size,
        open=False,
        timeout=30,
        kwargs={"autocommit": True, "application_name": APPLICATION_NAME},
        name="archon-server",
    )
    bounded_chats: OrderedDict[str, dict[str, Any]] = OrderedDict()
    centroids: dict[str, np.ndarray[Any, np.dtype[np.float32]]] = {}
    # list_id -> (chunk ids, source ids, normalised embeddings): the in-memory vector index
    vector_index: dict[int, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], Any]] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await pool.open(wait=True, timeout=30)
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT centroid FROM archon_embedding_lists ORDER BY list_id")
            rows = await cur.fetchall()
        centroids["matrix"] = _normalise(np.array([r[0] for r in rows], dtype=np.float32))
        if "python_similarity" not in faults:
            async with pool.connection() as conn:
                vector_index.update(await load_vector_index(conn))
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(title="Archon stand-in server", lifespan=lifespan)
    app.add_middleware(PoolTimingMiddleware)

    @asynccontextmanager
    async def connection() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection; the wait for it is recorded for Server-Timing."""
        started = time.perf_counter()
        async with pool.connection() as conn:
            waits = _pool_waits.get()
            if waits is not None:
                waits.append(time.perf_counter() - started)
            yield conn

    async def fetch(
        conn: psycopg.AsyncConnection[Any], query: str | sql.Composed, params: Any = None
    ) -> list[dict[str, Any]]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            return await cur.fetchall()

    # -- health ------------------------------------------------------------------------

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "healthy", "service": "archon-server", "ready": True}

    @app.get("/api/health")
    async def api_health() -> dict[str, Any]:
        stats = pool.get_stats()
        return {
            "status": "healthy",
            "service": "archon-backend",
            "timestamp": _now_iso(),
            "ready": True,
            "credentials_validated": True,
            "pool": {
                "size": stats.get("pool_size", 0),
                "available": stats.get("pool_available", 0),
                "max_size": pool.max_size,
                "requests_waiting": stats.get("requests_waiting", 0),
                "requests_num": stats.get("requests_num", 0),
                "requests_queued": stats.get("requests_queued", 0),
                "requests_wait_ms": stats.get("requests_wait_ms", 0),
            },
        }

    # -- projects ----------------------------------------------------------------------

    @app.get("/api/projects")
    async def list_projects(request: Request) -> Response:
        async with connection() as conn:
            if "etag_hotspot" not in faults:
                etag = await _projects_version_etag(conn)
                if _etag_matches(request, etag):
                    return Response(status_code=304, headers={"ETag": etag})
            projects = await fetch(
                conn,
                "SELECT id, title, description, docs, features, data, github_repo, pinned, "
                "created_at, updated_at FROM archon_projects ORDER BY created_at DESC",
            )
            if "n_plus_one" in faults:
                sources = await load_sources_one_query_per_project(conn, projects)
            else:
                sources = await load_sources_for_projects(conn, projects)
        payload_rows = [_project_with_sources(p, sources.get(p["id"], [])) for p in projects]
        payload = {"projects": payload_rows, "count": len(payload_rows)}
        if "etag_hotspot" in faults:
            etag = compute_etag(payload)
            if _etag_matches(request, etag):
                return Response(status_code=304, headers={"ETag": etag})
        payload["projects"] = [row_json(p) for p in payload_rows]
        payload["timestamp"] = _now_iso()
        return JSONResponse(payload, headers={"ETag": etag})

    @app.get("/api/projects/task-counts")
    async def task_counts() -> dict[str, dict[str, int]]:
        async with connection() as conn:
            rows = await fetch(
                conn,
                "SELECT status, project_id, count(*) AS n FROM archon_tasks "
                "WHERE archived = false GROUP BY status, project_id",
            )
        counts: dict[str, dict[str, int]] = {}
        for row in rows:
            per = counts.setdefault(str(row["project_id"]), dict.fromkeys(_STATUSES, 0))
            per[row["status"]] = int(row["n"])
        return counts

    @app.get("/api/projects/{project_id}")
    async def get_project(project_id: uuid.UUID) -> dict[str, Any]:
        async with connection() as conn:
            rows = await fetch(
                conn,
                "SELECT id, title, description, docs, features, data, github_repo, pinned, "
                "created_at, updated_at FROM archon_projects WHERE id = %s",
                (project_id,),
            )
            if not rows:
                raise HTTPException(404, f"Project {project_id} not found")
            sources = await load_sources_for_projects(conn, rows)
        return row_json(_project_with_sources(rows[0], sources.get(rows[0]["id"], [])))

    @app.get("/api/projects/{project_id}/tasks")
    async def list_project_tasks(
        project_id: uuid.UUID, request: Request, include_archived: bool = False
    ) -> Response:
        archived_filter = "" if include_archived else " AND archived = false"
        async with connection() as conn:
            if "etag_hotspot" not in faults:
                etag = await _tasks_version_etag(conn, project_id, archived_filter)
                if _etag_matches(request, etag):
                    return Response(status_code=304, headers={"ETag": etag})
            tasks = await fetch(
                conn,
                f"SELECT {_TASK_COLUMNS} FROM archon_tasks "
                f"WHERE project_id = %s{archived_filter} ORDER BY task_order, created_at",
                (project_id,),
            )
        if "etag_hotspot" in faults:
            etag = compute_etag(tasks)
            if _etag_matches(request, etag):
                return Response(status_code=304, headers={"ETag": etag})
        return JSONResponse([row_json(t) for t in tasks], headers={"ETag": etag})

    # -- tasks -------------------------------------------------------------------------

    @app.get("/api/tasks")
    async def list_tasks(
        status: str | None = None,
        project_id: uuid.UUID | None = None,
        page: int = 1,
        per_page: int = 50,
        q: str | None = None,
    ) -> dict[str, Any]:
        if status is not None and status not in _STATUSES:
            raise HTTPException(422, f"status must be one of {', '.join(_STATUSES)}")
        page, per_page = max(1, page), min(max(1, per_page), 200)
        where = [sql.SQL("archived = false")]
        params: dict[str, Any] = {"limit": per_page, "offset": (page - 1) * per_page}
        if status:
            where.append(sql.SQL("status = %(status)s"))
            params["status"] = status
        if project_id:
            where.append(sql.SQL("project_id = %(project_id)s"))
            params["project_id"] = project_id
        if q:
            where.append(sql.SQL("title ILIKE %(q)s"))
            params["q"] = f"%{q}%"
        condition = sql.SQL(" AND ").join(where)
        select = sql.SQL(
            "SELECT " + _TASK_COLUMNS + " FROM archon_tasks WHERE {} "
            "ORDER BY task_order, id LIMIT %(limit)s OFFSET %(offset)s"
        ).format(condition)
        # Capped count: exact up to 10,000, like a UI that shows "10,000+".
        count = sql.SQL(
            "SELECT count(*) AS n FROM (SELECT 1 FROM archon_tasks WHERE {} LIMIT 10001) AS t"
        ).format(condition)
        async with connection() as conn:
            rows = await fetch(conn, select, params)
            total = int((await fetch(conn, count, params))[0]["n"])
        return {
            "tasks": [row_json(r) for r in rows],
            "pagination": {
                "total": total,
                "total_capped": total > 10_000,
                "page": page,
                "per_page": per_page,
                "pages": math.ceil(min(total, 10_000) / per_page),
            },
        }

    @app.post("/api/tasks")
    async def create_task(body: TaskCreate) -> dict[str, Any]:
        if body.status not in _STATUSES:
            raise HTTPException(422, f"status must be one of {', '.join(_STATUSES)}")
        async with connection() as conn, conn.transaction():
            rows = await fetch(
                conn,
                f"INSERT INTO archon_tasks (id, project_id, title, description, status, "
                f"assignee, task_order, feature) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                f"RETURNING {_TASK_COLUMNS}",
                (
                    uuid.uuid4(),
                    body.project_id,
                    body.title,
                    body.description,
                    body.status,
                    body.assignee,
                    body.task_order,
                    body.feature,
                ),
            )
            await touch_project(conn, body.project_id)
        return {"message": "Task created successfully", "task": row_json(rows[0])}

    @app.put("/api/tasks/{task_id}")
    async def update_task(task_id: uuid.UUID, body: TaskUpdate) -> dict[str, Any]:
        changes = {
            k: v for k, v in body.model_dump().items() if k in _TASK_FIELDS and v is not None
        }
        if "status" in changes and changes["status"] not in _STATUSES:
            raise HTTPException(422, f"status must be one of {', '.join(_STATUSES)}")
        assignments: list[sql.Composable] = [
            sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in changes
        ]
        assignments.append(sql.SQL("updated_at = now()"))
        query = sql.SQL(
            "UPDATE archon_tasks SET {} WHERE id = %(task_id)s RETURNING " + _TASK_COLUMNS
        ).format(sql.SQL(", ").join(assignments))
        async with connection() as conn, conn.transaction():
            rows = await fetch(conn, query, {**changes, "task_id": task_id})
            if not rows:
                raise HTTPException(404, f"Task {task_id} not found")
            if rows[0]["project_id"] is not None:
                await touch_project(conn, rows[0]["project_id"])
        return {"message": "Task updated successfully", "task": row_json(rows[0])}

    # -- knowledge ---------------------------------------------------------------------

    @app.get("/api/knowledge-items")
    async def knowledge_items(page: int = 1, per_page: int = 20) -> dict[str, Any]:
        page, per_page = max(1, page), min(max(1, per_page), 100)
        async with connection() as conn:
            sources = await _sources_page(conn, page, per_page)
            counts = await fetch(
                conn,
                "SELECT source_id, count(*) AS chunks FROM archon_crawled_pages "
                "WHERE source_id = ANY(%s) GROUP BY source_id",
                ([s["source_id"] for s in sources],),
            )
            total = (await fetch(conn, "SELECT count(*) AS n FROM archon_sources"))[0]["n"]
        chunks = {c["source_id"]: int(c["chunks"]) for c in counts}
        items = []
        for s in sources:
            metadata = dict(s["metadata"])
            metadata.update(chunks_count=chunks.get(s["source_id"], 0))
            metadata.update(word_count=s["total_word_count"])
            items.append(
                {
                    "id": s["source_id"],
                    "title": s["title"],
                    "url": f"https://{s['title']}",
                    "source_id": s["source_id"],
                    "metadata": metadata,
                    "created_at": jsonable(s["created_at"]),
                    "updated_at": jsonable(s["updated_at"]),
                }
            )
        return {"items": items, "total": int(total), "page": page, "per_page": per_page}

    @app.get("/api/knowledge-items/summary")
    async def knowledge_summary(page: int = 1, per_page: int = 20) -> dict[str, Any]:
        page, per_page = max(1, page), min(max(1, per_page), 100)
        async with connection() as conn:
            sources = await _sources_page(conn, page, per_page)
            ids = [s["source_id"] for s in sources]
            if "blocking_call" in faults:
                counts = summary_counts_blocking(settings.dsn, ids)
            else:
                counts = await summary_counts(conn, ids)
            total = (await fetch(conn, "SELECT count(*) AS n FROM archon_sources"))[0]["n"]
        items = [
            {
                "source_id": s["source_id"],
                "title": s["title"],
                "url": f"https://{s['title']}",
                "knowledge_type": s["metadata"].get("knowledge_type", "technical"),
                "word_count": s["total_word_count"],
                **counts.get(s["source_id"], {"chunks_count": 0, "projects": 0}),
            }
            for s in sources
        ]
        return {"items": items, "total": int(total), "page": page, "per_page": per_page}

    async def _sources_page(
        conn: psycopg.AsyncConnection[Any], page: int, per_page: int
    ) -> list[dict[str, Any]]:
        return await fetch(
            conn,
            "SELECT source_id, title, summary, metadata, total_word_count, created_at, "
            "updated_at FROM archon_sources ORDER BY source_id LIMIT %s OFFSET %s",
            (per_page, (page - 1) * per_page),
        )

    async def summary_counts(
        conn: psycopg.AsyncConnection[Any], source_ids: Sequence[str]
    ) -> dict[str, dict[str, int]]:
        """Chunk and project counts for a page of sources in two awaited queries."""
        rows = await fetch(
            conn,
            "SELECT source_id, count(*) AS chunks FROM archon_crawled_pages "
            "WHERE source_id = ANY(%s) GROUP BY source_id",
            (list(source_ids),),
        )
        links = await fetch(
            conn,
            "SELECT source_id, count(*) AS n FROM archon_project_sources "
            "WHERE source_id = ANY(%s) GROUP BY source_id",
            (list(source_ids),),
        )
        linked = {r["source_id"]: int(r["n"]) for r in links}
        return {
            r["source_id"]: {
                "chunks_count": int(r["chunks"]),
                "projects": linked.get(r["source_id"], 0),
            }
            for r in rows
        }

    # -- RAG ---------------------------------------------------------------------------

    @app.post("/api/rag/query")
    async def rag_query(body: RagQuery) -> dict[str, Any]:
        query_vec = embed_query(body.query, centroids["matrix"])
        list_id = int(np.argmax(centroids["matrix"] @ query_vec))  # ivfflat probes = 1
        async with connection() as conn:
            if "python_similarity" in faults:
                source_filter = " AND source_id = %(source)s" if body.source else ""
                candidates = await fetch(
                    conn,
                    "SELECT id, url, content, metadata, source_id, embedding "
                    "FROM archon_crawled_pages WHERE cluster_id = %(list_id)s" + source_filter,
                    {"list_id": list_id, "source": body.source},
                )
                query_list = query_vec.tolist()
                scored = [
                    (python_cosine_similarity(query_list, c["embedding"]), c) for c in candidates
                ]
                scored.sort(key=lambda pair: pair[0], reverse=True)
                top = scored[: body.match_count]
                results = [
                    (score, {k: v for k, v in c.items() if k != "embedding"}) for score, c in top
                ]
            else:
                results = await _vector_top_k(
                    conn, query_vec, list_id, body.source, body.match_count
                )
        return {
            "results": [
                {**row_json(row), "similarity": round(float(score), 6)} for score, row in results
            ],
            "query": body.query,
            "match_count": body.match_count,
            "search_mode": "vector",
        }

    async def _vector_top_k(
        conn: psycopg.AsyncConnection[Any],
        query_vec: np.ndarray[Any, np.dtype[np.float32]],
        list_id: int,
        source: str | None,
        k: int,
    ) -> list[tuple[float, dict[str, Any]]]:
        """Score one list's chunks with a numpy product over the in-memory vector index,
        then fetch only the top k rows."""
        entry = vector_index.get(list_id)
        if entry is None:
            return []
        ids, sources, matrix = entry
        scores = matrix @ query_vec
        if source is not None:
            scores = np.where(sources == source, scores, -np.inf)
        top = [int(i) for i in np.argsort(-scores)[:k] if np.isfinite(scores[i])]
        rows = await fetch(
            conn,
            "SELECT id, url, content, metadata, source_id FROM archon_crawled_pages "
            "WHERE id = ANY(%s)",
            ([int(ids[i]) for i in top],),
        )
        by_id = {r["id"]: r for r in rows}
        return [(float(scores[i]), by_id[int(ids[i])]) for i in top if int(ids[i]) in by_id]

    # -- progress ----------------------------------------------------------------------

    @app.get("/api/progress/{progress_id}")
    async def progress(progress_id: str) -> dict[str, Any]:
        if not progress_id.isdigit():
            raise HTTPException(404, f"Operation {progress_id} not found")
        async with connection() as conn:
            rows = await fetch(
                conn,
                "SELECT id, agent, status, enqueued_at, started_at, finished_at, tokens, "
                "max_tokens, error FROM archon_agent_jobs WHERE id = %s",
                (int(progress_id),),
            )
        if not rows:
            raise HTTPException(404, f"Operation {progress_id} not found")
        job = rows[0]
        state = {"queued": "starting", "running": "processing"}.get(job["status"], job["status"])
        state = "completed" if state == "done" else state
        return {
            "progressId": progress_id,
            "type": job["agent"],
            "status": state,
            "progress": 100
            if job["status"] in ("done", "failed")
            else (50 if job["started_at"] else 0),
            "message": job["error"] or f"agent job {job['status']}",
            "startedAt": jsonable(job["enqueued_at"]),
            "completedAt": jsonable(job["finished_at"]),
        }

    # -- agent chat --------------------------------------------------------------------

    @app.post("/api/agent-chat/sessions")
    async def create_chat_session(body: ChatSessionCreate) -> dict[str, Any]:
        session_id = str(uuid.uuid4())
        session: dict[str, Any] = {
            "session_id": session_id,
            "agent_type": body.agent_type,
            "project_id": str(body.project_id) if body.project_id else None,
            "created_at": _now_iso(),
            "messages": [],
        }
        if "chat_session_leak" in faults:
            CHAT_SESSIONS[session_id] = session
        else:
            bounded_chats[session_id] = session
            while len(bounded_chats) > BOUNDED_SESSIONS:
                bounded_chats.popitem(last=False)
        return {k: v for k, v in session.items() if k != "messages"}

    @app.post("/api/agent-chat/sessions/{session_id}/messages")
    async def post_chat_message(session_id: str, body: ChatMessage) -> dict[str, Any]:
        store = CHAT_SESSIONS if "chat_session_leak" in faults else bounded_chats
        session = store.get(session_id)
        if session is None:
            raise HTTPException(404, f"Chat session {session_id} not found")
        if store is bounded_chats:
            bounded_chats.move_to_end(session_id)
        seed = int.from_bytes(hashlib.sha256(body.message.encode()).digest()[:4], "big")
        async with connection() as conn:
            chunks = await fetch(
                conn,
                "SELECT id, content FROM archon_crawled_pages WHERE cluster_id = %s "
                "ORDER BY id LIMIT %s",
                (seed % max(1, len(centroids["matrix"])), CHAT_CONTEXT_CHUNKS),
            )
        context = "\n\n".join(c["content"] for c in chunks)
        reply = _chat_reply(body.message, chunks, random.Random(seed))
        now = _now_iso()
        user_msg = {
            "id": str(uuid.uuid4()),
            "role": "user",
            "content": body.message,
            "timestamp": now,
        }
        assistant = {
            "id": str(uuid.uuid4()),
            "role": "assistant",
            "content": reply,
            "timestamp": now,
        }
        if store is CHAT_SESSIONS:
            # the leak: the whole exchange, with its retrieved context, kept forever
            session["messages"].append({**user_msg, "context": context})
            session["messages"].append({**assistant, "context": context})
        else:
            session["messages"].extend([user_msg, assistant])
            del session["messages"][:-BOUNDED_MESSAGES]
        return {
            "session_id": session_id,
            "message": assistant,
            "message_count": len(session["messages"]),
            "context_chars": len(context),
        }

    return app


# --- fault code paths and their efficient twins (module level: clear profiler frames) -----


async def load_sources_one_query_per_project(
    conn: psycopg.AsyncConnection[Any], projects: Sequence[dict[str, Any]]
) -> dict[Any, list[dict[str, Any]]]:
    """The n_plus_one fault: one round trip per project."""
    found: dict[Any, list[dict[str, Any]]] = {}
    async with conn.cursor(row_factory=dict_row) as cur:
        for project in projects:
            await cur.execute(
                "SELECT ps.project_id, s.source_id, s.title, s.metadata, ps.notes "
                "FROM archon_project_sources ps JOIN archon_sources s "
                "ON s.source_id = ps.source_id WHERE ps.project_id = %s",
                (project["id"],),
            )
            found[project["id"]] = await cur.fetchall()
    return found


async def load_sources_for_projects(
    conn: psycopg.AsyncConnection[Any], projects: Sequence[dict[str, Any]]
) -> dict[Any, list[dict[str, Any]]]:
    """Every project's sources in one query."""
    found: dict[Any, list[dict[str, Any]]] = {}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT ps.project_id, s.source_id, s.title, s.metadata, ps.notes "
            "FROM archon_project_sources ps JOIN archon_sources s "
            "ON s.source_id = ps.source_id WHERE ps.project_id = ANY(%s)",
            ([p["id"] for p in projects],),
        )
        for row in await cur.fetchall():
            found.setdefault(row["project_id"], []).append(row)
    return found


def compute_etag(payload: Any) -> str:
    """The etag_hotspot fault: MD5 of a full, key-sorted json.dumps of the fetched payload,
    computed in Python on every request (so a 304 still pays for the fetch and the dump)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return '"' + hashlib.md5(text.encode()).hexdigest() + '"'


async def _projects_version_etag(conn: psycopg.AsyncConnection[Any]) -> str:
    """A cheap ETag from the data's version (row counts and newest change times)."""
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM archon_projects), "
        "(SELECT max(updated_at) FROM archon_projects), "
        "(SELECT count(*) FROM archon_project_sources), "
        "(SELECT max(linked_at) FROM archon_project_sources)"
    )
    return _version_etag("projects", await cur.fetchone())


async def _tasks_version_etag(
    conn: psycopg.AsyncConnection[Any], project_id: uuid.UUID, archived_filter: str
) -> str:
    cur = await conn.execute(
        "SELECT count(*), max(updated_at) FROM archon_tasks "
        "WHERE project_id = %s" + archived_filter,
        (project_id,),
    )
    return _version_etag(f"tasks-{project_id}", await cur.fetchone())


def _version_etag(kind: str, row: Any) -> str:
    text = kind + "|" + "|".join(str(jsonable(v)) for v in (row or ()))
    return 'W/"' + hashlib.md5(text.encode()).hexdigest() + '"'


def _etag_matches(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    return header is not None and etag in [v.strip() for v in header.split(",")]


async def touch_project(conn: psycopg.AsyncConnection[Any], project_id: uuid.UUID) -> None:
    """Bump the project's updated_at (its ETag changes); takes the project's row lock."""
    await conn.execute("UPDATE archon_projects SET updated_at = now() WHERE id = %s", (project_id,))


def summary_counts_blocking(dsn: str, source_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """The blocking_call fault: a synchronous client, a new connection and two round trips per
    source, all run on the event loop thread inside an ``async def`` handler."""
    counts: dict[str, dict[str, int]] = {}
    with psycopg.connect(dsn, autocommit=True, application_name=APPLICATION_NAME) as conn:
        for source_id in source_ids:
            chunks = conn.execute(
                "SELECT count(*) FROM archon_crawled_pages WHERE source_id = %s", (source_id,)
            ).fetchone()
            linked = conn.execute(
                "SELECT count(*) FROM archon_project_sources WHERE source_id = %s", (source_id,)
            ).fetchone()
            if chunks and chunks[0]:
                counts[source_id] = {
                    "chunks_count": int(chunks[0]),
                    "projects": int(linked[0]) if linked else 0,
                }
    return counts


def python_cosine_similarity(a: Sequence[float], b: Sequence[float]) -> float:
    """The python_similarity fault: cosine similarity in pure Python, one chunk at a time."""
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm_a = math.sqrt(sum(x * x for x in a))
    norm_b = math.sqrt(sum(y * y for y in b))
    return dot / (norm_a * norm_b) if norm_a and norm_b else 0.0


def embed_query(
    text: str, centroids: np.ndarray[Any, np.dtype[np.float32]]
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A deterministic stand-in for an embedding model: near one list's centroid."""
    digest = hashlib.sha256(text.encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    base = centroids[int.from_bytes(digest[8:12], "big") % len(centroids)]
    vec = base + rng.normal(0, 0.05, size=base.shape).astype(np.float32)
    return _normalise(vec)


async def load_vector_index(
    conn: psycopg.AsyncConnection[Any], batch: int = 5000
) -> dict[int, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], Any]]:
    """Every chunk's embedding, normalised, grouped by list (read once at start-up, so the
    process's memory is flat afterwards). Rows arrive as ``array_send`` bytes in binary
    format, decoded by numpy without one Python float per element."""
    ids: list[int] = []
    lists: list[int] = []
    sources: list[str] = []
    blocks: list[np.ndarray[Any, np.dtype[np.float32]]] = []
    async with conn.transaction(), conn.cursor(name="archon_vector_index", binary=True) as cur:
        await cur.execute(
            "SELECT id, cluster_id, source_id, array_send(embedding) FROM archon_crawled_pages "
            "ORDER BY cluster_id, id"
        )
        while rows := await cur.fetchmany(batch):
            ids.extend(int(r[0]) for r in rows)
            lists.extend(int(r[1]) for r in rows)
            sources.extend(str(r[2]) for r in rows)
            blocks.append(_decode_float4_arrays([bytes(r[3]) for r in rows]))
    if not ids:
        return {}
    matrix = _normalise(np.vstack(blocks))
    id_arr, list_arr, source_arr = np.array(ids), np.array(lists), np.array(sources, dtype=object)
    index: dict[int, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], Any]] = {}
    for list_id in np.unique(list_arr):
        mask = list_arr == list_id
        index[int(list_id)] = (id_arr[mask], source_arr[mask], matrix[mask])
    return index


def _decode_float4_arrays(raws: Sequence[bytes]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Decode equal-length ``array_send(real[])`` values (1-D, no NULLs): a 20-byte header,
    then a 4-byte length and a big-endian float4 per element."""
    width = len(raws[0])
    dim = (width - 20) // 8
    grid = np.frombuffer(b"".join(raws), dtype=np.uint8).reshape(len(raws), width)
    values = np.ascontiguousarray(grid[:, 20:].reshape(len(raws), dim, 8)[:, :, 4:])
    return values.view(">f4").reshape(len(raws), dim).astype(np.float32)


def _normalise(m: np.ndarray[Any, np.dtype[np.float32]]) -> np.ndarray[Any, np.dtype[np.float32]]:
    norms = np.linalg.norm(m, axis=-1, keepdims=True)
    norms[norms == 0] = 1.0
    normalised: np.ndarray[Any, np.dtype[np.float32]] = (m / norms).astype(np.float32)
    return normalised


def _project_with_sources(project: dict[str, Any], sources: list[dict[str, Any]]) -> dict[str, Any]:
    technical = [
        {"source_id": s["source_id"], "title": s["title"]}
        for s in sources
        if s["notes"] != "business"
    ]
    business = [
        {"source_id": s["source_id"], "title": s["title"]}
        for s in sources
        if s["notes"] == "business"
    ]
    return {**project, "technical_sources": technical, "business_sources": business}


def _chat_reply(message: str, chunks: Sequence[dict[str, Any]], rng: random.Random) -> str:
    cited = ", ".join(f"[{c['id']}]" for c in rng.sample(list(chunks), min(3, len(chunks))))
    return f"Based on the knowledge base {cited}: here is what I found about '{message[:80]}'."


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def main(argv: Sequence[str] | None = None) -> None:
    parser = base_parser("The Archon stand-in API server (FastAPI).", DEFAULT_PORT)
    parser.add_argument("--pool-size", type=int, default=DEFAULT_POOL_SIZE)
    args = parser.parse_args(argv)
    dsn, host = resolve_common(args, parser)
    settings = ServerSettings(dsn=dsn, faults=args.faults, pool_size=args.pool_size)
    serve(create_app(settings), host, args.port)


if __name__ == "__main__":
    main()
