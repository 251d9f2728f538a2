"""The Archon stand-in's agents service: a PostgreSQL job queue and its workers.

``POST /agents/run`` enqueues a job in ``archon_agent_jobs``; worker tasks in this process
claim jobs with ``FOR UPDATE SKIP LOCKED``, call the simulated LLM (diag.demo.llm: time to
first token, per-token times, 429s retried with exponential backoff), run a tool step
that does real CPU work (``run_tool_step``), and store the result with the job's KPIs:
queue wait, time to first token, LLM latency, tool time and completion time.

The lock_contention fault lives in ``run_job_holding_project_lock``: it locks the job's
project row (``SELECT ... FOR UPDATE``) and keeps the transaction open while it waits on
the LLM, so the server's ``PUT /api/tasks/{id}`` (which updates that project row) waits.
Jobs without a project_id go to one of the HOT_PROJECT_IDS, the projects the UI lists
first, so a load that edits those projects' tasks runs into the lock.

Run: ``python -m diag.demo.agents --port 8052 --faults all`` (DSN in $ARCHON_DEMO_DSN).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from fastapi import FastAPI, HTTPException
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from diag.demo.common import base_parser, resolve_common, row_json, serve
from diag.demo.llm import Completion, LLMConfig, LLMUnavailable, complete

APPLICATION_NAME = "archon-agents"
DEFAULT_PORT = 8052
DEFAULT_WORKERS = 4
IDLE_POLL_S = 1.0
# The seeded projects 1..5 (created newest first, so GET /api/projects lists them first).
HOT_PROJECT_IDS: tuple[uuid.UUID, ...] = tuple(
    uuid.UUID(hashlib.md5(f"archon-project-{n}".encode()).hexdigest()) for n in range(1, 6)
)


@dataclass(frozen=True)
class AgentSettings:
    dsn: str
    faults: frozenset[str]
    workers: int = DEFAULT_WORKERS
    llm: LLMConfig = field(default_factory=LLMConfig)


class RunRequest(BaseModel):
    agent: str = "rag"
    prompt: str = "Summarise the open tasks of this project"
    project_id: uuid.UUID | None = None
    max_tokens: int = Field(default=80, ge=1, le=2000)


_JOB_COLUMNS = (
    "id, agent, project_id, prompt, max_tokens, status, attempts, enqueued_at, started_at, "
    "finished_at, queue_wait_ms, ttft_ms, llm_latency_ms, tool_ms, completion_ms, "
    "llm_retries, tokens, result, error"
)

_CLAIM = """
UPDATE archon_agent_jobs
SET status = 'running', started_at = clock_timestamp(), attempts = attempts + 1,
    queue_wait_ms = extract(epoch FROM clock_timestamp() - enqueued_at) * 1000
WHERE id = (SELECT id FROM archon_agent_jobs WHERE status = 'queued'
            ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, agent, project_id, prompt, max_tokens
"""

_FINISH = """
UPDATE archon_agent_jobs
SET status = %(status)s, finished_at = clock_timestamp(),
    completion_ms = extract(epoch FROM clock_timestamp() - enqueued_at) * 1000,
    ttft_ms = %(ttft_ms)s, llm_latency_ms = %(llm_ms)s, tool_ms = %(tool_ms)s,
    llm_retries = %(retries)s, tokens = %(tokens)s, result = %(result)s, error = %(error)s
WHERE id = %(id)s
"""


def run_tool_step(text: str, rounds: int = 40) -> str:
    """The agent's tool step: real CPU work in Python (keyword extraction over the answer
    and the prompt, repeated), about 10-30 ms on a 2-core machine."""
    words = text.lower().split()
    best: list[tuple[str, int]] = []
    for round_no in range(rounds):
        counts: collections.Counter[str] = collections.Counter()
        for i, word in enumerate(words):
            counts[word.strip(".,:;!?")] += 1 + (i + round_no) % 3
            if i:
                counts[words[i - 1] + " " + word] += 1
        best = counts.most_common(5)
    return ", ".join(f"{w}:{n}" for w, n in best)


def create_app(settings: AgentSettings) -> FastAPI:
    pool: AsyncConnectionPool = AsyncConnectionPool(
        settings.dsn,
        min_size=settings.workers + 2,
        max_size=settings.workers + 4,
        open=False,
        timeout=30,
        kwargs={"autocommit": True, "application_name": APPLICATION_NAME},
        name="archon-agents",
    )
    wakeup = asyncio.Event()
    holding = "lock_contention" in settings.faults

    async def worker(number: int) -> None:
        while True:
            try:
                job = await claim_job(pool)
            except psycopg.Error:
                job = None
                await asyncio.sleep(IDLE_POLL_S)
            if job is None:
                wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), IDLE_POLL_S)
                continue
            if job["project_id"] is None:
                job["project_id"] = HOT_PROJECT_IDS[job["id"] % len(HOT_PROJECT_IDS)]
            rng = random.Random(job["id"])
            try:
                if holding:
                    await run_job_holding_project_lock(pool, job, settings.llm, rng)
                else:
                    await run_job(pool, job, settings.llm, rng)
            except (LLMUnavailable, psycopg.Error) as exc:
                await _finish(pool, job["id"], None, 0.0, str(exc))

    tasks: list[asyncio.Task[None]] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await pool.open(wait=True, timeout=30)
        tasks.extend(asyncio.create_task(worker(n)) for n in range(settings.workers))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await pool.close()

    app = FastAPI(title="Archon stand-in agents service", lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "healthy", "service": "archon-agents", "workers": settings.workers}

    @app.post("/agents/run")
    async def run_agent(body: RunRequest) -> dict[str, Any]:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO archon_agent_jobs (agent, project_id, prompt, max_tokens) "
                "VALUES (%s, %s, %s, %s) RETURNING id",
                (body.agent, body.project_id, body.prompt, body.max_tokens),
            )
            row = await cur.fetchone()
        wakeup.set()
        assert row is not None
        return {"job_id": int(row[0]), "status": "queued"}

    @app.get("/agents/jobs/{job_id}")
    async def get_job(job_id: int) -> dict[str, Any]:
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                f"SELECT {_JOB_COLUMNS} FROM archon_agent_jobs WHERE id = %s",
                (job_id,),
            )
            row = await cur.fetchone()
        if row is None:
            raise HTTPException(404, f"Job {job_id} not found")
        return row_json(row)

    @app.get("/agents/stats")
    async def stats() -> dict[str, Any]:
        """Queue KPIs over every job: counts by status and percentiles of the timings."""
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT count(*) FILTER (WHERE status = 'queued') AS queued, "
                "count(*) FILTER (WHERE status = 'running') AS running, "
                "count(*) FILTER (WHERE status = 'done') AS done, "
                "count(*) FILTER (WHERE status = 'failed') AS failed, "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY queue_wait_ms) AS queue_wait_p50, "
                "percentile_cont(0.95) WITHIN GROUP (ORDER BY queue_wait_ms) AS queue_wait_p95, "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY ttft_ms) AS ttft_p50, "
                "percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft_ms) AS ttft_p95, "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY llm_latency_ms) AS llm_p50, "
                "percentile_cont(0.95) WITHIN GROUP (ORDER BY llm_latency_ms) AS llm_p95, "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY completion_ms) AS completion_p50, "
                "percentile_cont(0.95) WITHIN GROUP (ORDER BY completion_ms) AS completion_p95, "
                "coalesce(sum(llm_retries), 0) AS llm_retries "
                "FROM archon_agent_jobs"
            )
            row = await cur.fetchone()
        return row_json(row or {})

    return app


async def claim_job(pool: AsyncConnectionPool) -> dict[str, Any] | None:
    """Claim the oldest queued job (FOR UPDATE SKIP LOCKED: workers never wait on each other)."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_CLAIM)
        return await cur.fetchone()


async def run_job(
    pool: AsyncConnectionPool, job: dict[str, Any], llm: LLMConfig, rng: random.Random
) -> None:
    """Read the project, call the LLM with no transaction open, then a short write."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT title FROM archon_projects WHERE id = %s", (job["project_id"],)
        )
        project = await cur.fetchone()
    prompt = f"{job['prompt']} ({project[0] if project else 'no project'})"
    completion = await complete(prompt, job["max_tokens"], rng, llm)
    tool_started = time.perf_counter()
    summary = run_tool_step(completion.text + " " + prompt)
    tool_s = time.perf_counter() - tool_started
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            "UPDATE archon_projects SET updated_at = now() WHERE id = %s", (job["project_id"],)
        )
        await _finish_on(conn, job["id"], completion, tool_s, None, summary)


async def run_job_holding_project_lock(
    pool: AsyncConnectionPool, job: dict[str, Any], llm: LLMConfig, rng: random.Random
) -> None:
    """The lock_contention fault: lock the project row, then wait on the LLM inside the
    still-open transaction; every writer of that project row queues behind it."""
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "SELECT title FROM archon_projects WHERE id = %s FOR UPDATE", (job["project_id"],)
        )
        project = await cur.fetchone()
        prompt = f"{job['prompt']} ({project[0] if project else 'no project'})"
        completion = await complete(prompt, job["max_tokens"], rng, llm)
        tool_started = time.perf_counter()
        summary = run_tool_step(completion.text + " " + prompt)
        tool_s = time.perf_counter() - tool_started
        await conn.execute(
            "UPDATE archon_projects SET updated_at = now() WHERE id = %s", (job["project_id"],)
        )
        await _finish_on(conn, job["id"], completion, tool_s, None, summary)


async def _finish(
    pool: AsyncConnectionPool,
    job_id: int,
    completion: Completion | None,
    tool_s: float,
    error: str | None,
) -> None:
    async with pool.connection() as conn:
        await _finish_on(conn, job_id, completion, tool_s, error, None)


async def _finish_on(
    conn: psycopg.AsyncConnection[Any],
    job_id: int,
    completion: Completion | None,
    tool_s: float,
    error: str | None,
    result: str | None,
) -> None:
    await conn.execute(
        _FINISH,
        {
            "id": job_id,
            "status": "failed" if error else "done",
            "ttft_ms": completion.ttft_s * 1000 if completion else None,
            "llm_ms": completion.latency_s * 1000 if completion else None,
            "tool_ms": tool_s * 1000 if completion else None,
            "retries": completion.retries if completion else 0,
            "tokens": completion.tokens if completion else None,
            "result": result,
            "error": error,
        },
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = base_parser("The Archon stand-in agents service (job queue + workers).", DEFAULT_PORT)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--llm-time-scale", type=float, default=1.0, help="multiply LLM delays")
    parser.add_argument("--llm-429-rate", type=float, default=LLMConfig.rate_429)
    args = parser.parse_args(argv)
    dsn, host = resolve_common(args, parser)
    if not 0 <= args.llm_429_rate <= 1:
        parser.error("--llm-429-rate must be between 0 and 1")
    llm = LLMConfig(rate_429=args.llm_429_rate, time_scale=args.llm_time_scale)
    settings = AgentSettings(dsn=dsn, faults=args.faults, workers=args.workers, llm=llm)
    serve(create_app(settings), host, args.port)


if __name__ == "__main__":
    main()
