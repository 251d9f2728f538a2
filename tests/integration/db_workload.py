"""Workloads for the PostgreSQL diagnostics tests: a database of their own in the embedded
cluster (a tasks-like table without an index on the filtered column), and bounded
background sessions that plant one problem each."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
from psycopg import sql

TASK_ROWS = 120_000
PROJECTS = 400


@dataclass(frozen=True)
class WorkDb:
    name: str
    dsn: str
    admin_dsn: str
    hypopg: bool


def create_workdb(admin_dsn: str, prefix: str) -> WorkDb:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = admin_dsn.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        hypopg = True
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
        except psycopg.Error:
            hypopg = False
        conn.execute(
            "CREATE TABLE projects (id int PRIMARY KEY, name text NOT NULL);"
            "CREATE TABLE tasks (id bigserial PRIMARY KEY, project_id int NOT NULL, "
            "status text NOT NULL, title text NOT NULL, created_at timestamptz DEFAULT now());"
            "CREATE TABLE victims (id serial PRIMARY KEY, n int NOT NULL);"
        )
        conn.execute(
            "INSERT INTO projects SELECT g, 'project ' || g FROM generate_series(1, %s) g",
            (PROJECTS,),
        )
        conn.execute(
            "INSERT INTO tasks (project_id, status, title) SELECT g %% %s + 1, "
            "(ARRAY['todo','doing','review','done'])[1 + g %% 4], md5(g::text) "
            "FROM generate_series(1, %s) g",
            (PROJECTS, TASK_ROWS),
        )
        conn.execute("INSERT INTO victims (n) SELECT g FROM generate_series(1, 10) g")
        conn.execute("ANALYZE projects; ANALYZE tasks; ANALYZE victims")
    return WorkDb(name, dsn, admin_dsn, hypopg)


def drop_workdb(db: WorkDb) -> None:
    with psycopg.connect(db.admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')


class Background:
    """Bounded background sessions; ``stop()`` joins them and re-raises their errors."""

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def spawn(self, fn: Callable[[threading.Event], None]) -> None:
        def body() -> None:
            try:
                fn(self.stop_event)
            except BaseException as exc:  # reported by stop()
                self.errors.append(exc)

        thread = threading.Thread(target=body, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(timeout)
        if self.errors:
            raise self.errors[0]


@contextlib.contextmanager
def background() -> Iterator[Background]:
    bg = Background()
    try:
        yield bg
    finally:
        bg.stop()


def missing_index_load(dsn: str, seconds: float) -> Callable[[threading.Event], None]:
    """The same filtered query over and over: a sequential scan each time."""

    def run(stop: threading.Event) -> None:
        end = time.monotonic() + seconds
        with psycopg.connect(dsn, autocommit=True) as conn:
            i = 0
            while not stop.is_set() and time.monotonic() < end:
                conn.execute("SELECT * FROM tasks WHERE project_id = %s", (i % PROJECTS + 1,))
                i += 1

    return run


def n_plus_one_load(dsn: str, requests: int, per_request: int) -> Callable[[threading.Event], None]:
    """``requests`` "requests", each one cheap lookup per project (an N+1)."""

    def run(stop: threading.Event) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for r in range(requests):
                if stop.is_set():
                    return
                for k in range(per_request):
                    conn.execute(
                        "SELECT id, name FROM projects WHERE id = %s", ((r + k) % PROJECTS + 1,)
                    )
                time.sleep(0.005)

    return run


def sort_spill_load(dsn: str, times: int) -> Callable[[threading.Event], None]:
    """A big sort with a tiny work_mem: spills to disk (and is slow enough for auto_explain)."""

    def run(stop: threading.Event) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET work_mem = '64kB'")
            conn.execute("SET max_parallel_workers_per_gather = 0")
            for _ in range(times):
                if stop.is_set():
                    return
                conn.execute(
                    "SELECT id, title FROM tasks ORDER BY title, id LIMIT 10 OFFSET 60000"
                ).fetchall()

    return run


def lock_chain(dsn: str, hold_s: float, secret: str) -> Callable[[threading.Event], None]:
    """Session A updates a row and sits idle in its transaction; session B waits on it."""

    def run(stop: threading.Event) -> None:
        with psycopg.connect(dsn) as holder, psycopg.connect(dsn, autocommit=True) as waiter:
            # the literal is inlined so it shows in pg_stat_activity (the tool must redact it)
            holder.execute(
                sql.SQL("UPDATE projects SET name = {} WHERE id = 1").format(sql.Literal(secret))
            )
            done = threading.Event()

            def wait_on_lock() -> None:
                waiter.execute("UPDATE projects SET name = name WHERE id = 1")
                done.set()

            t = threading.Thread(target=wait_on_lock, daemon=True)
            t.start()
            stop.wait(hold_s)
            holder.rollback()
            t.join(10)
            assert done.is_set()

    return run
