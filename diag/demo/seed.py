"""Create the stand-in's database and seed it deterministically, once per database.

Everything is generated inside PostgreSQL (``generate_series`` + ``setseed``/``random()``,
no parallel workers, so the same sizes give the same rows). A marker row in
``archon_demo_meta`` records the schema version and sizes; a database whose marker
matches is reused as it is, anything else is dropped and seeded again.

This module belongs to the *diagnosed* service, not to the diagnostics: its SQL lives
here and in ``schema.sql`` / ``indexes.sql`` beside it, not in the tool's ``sql/``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

SCHEMA_VERSION = 4
DEFAULT_DBNAME = "archon"
PROJECT_ID_INDEX = "idx_archon_tasks_project_id"
_HERE = Path(__file__).resolve().parent

_TABLES = (
    "archon_agent_jobs",
    "archon_project_sources",
    "archon_crawled_pages",
    "archon_embedding_lists",
    "archon_sources",
    "archon_tasks",
    "archon_projects",
    "archon_demo_meta",
)

_WORDS = (
    "agent api async auth backend batch cache chunk client cluster config crawl cursor "
    "database deploy docs embedding endpoint error event fastapi feature fetch filter "
    "handler index ingest job json knowledge latency layout lock migration model "
    "monitor network page pagination parser pipeline pool postgres project prompt "
    "queue rag rate refactor release request retry route schema search server session "
    "source sql stream supabase task test thread timeout token tool trace ui update "
    "upload user vector webhook worker"
)


@dataclass(frozen=True)
class Sizes:
    """How much data to seed. The defaults seed in well under 30 s on two cores."""

    projects: int = 250
    tasks: int = 200_000
    sources: int = 100
    pages: int = 50_000
    embedding_dim: int = 256
    lists: int = 50  # ivfflat-like lists; a RAG query scores one list (~pages/lists chunks)

    @classmethod
    def small(cls) -> Sizes:
        """For tests: small enough to seed in a few seconds, large enough that a per-project
        task query scans ~20x more rows without its index."""
        return cls(projects=40, tasks=24_000, sources=40, pages=6_000, embedding_dim=128, lists=6)

    def to_json(self) -> dict[str, int]:
        return asdict(self)


def with_dbname(dsn: str, dbname: str) -> str:
    """The same server with another database (URL or key=value DSNs)."""
    if dsn.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(dsn)
        return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, ""))
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


def ensure_database(admin_dsn: str, dbname: str = DEFAULT_DBNAME) -> str:
    """Create ``dbname`` on the server of ``admin_dsn`` if missing; return its DSN."""
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return with_dbname(admin_dsn, dbname)


def seed_marker(dsn: str) -> dict[str, object] | None:
    """The recorded seed (schema version, sizes, seconds), or None if not seeded."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        found = conn.execute("SELECT to_regclass('archon_demo_meta') IS NOT NULL").fetchone()
        if not found or not found[0]:
            return None
        row = conn.execute("SELECT value FROM archon_demo_meta WHERE key = 'seed'").fetchone()
    return dict(row[0]) if row else None


def ensure_seeded(dsn: str, sizes: Sizes) -> tuple[bool, float]:
    """Seed unless the marker matches; returns (seeded now, seconds spent)."""
    marker = seed_marker(dsn)
    if (
        marker is not None
        and marker.get("schema_version") == SCHEMA_VERSION
        and marker.get("sizes") == sizes.to_json()
    ):
        return False, 0.0
    return True, seed(dsn, sizes)


def seed(dsn: str, sizes: Sizes) -> float:
    """Drop and recreate every stand-in table, fill them, build indexes; return seconds."""
    started = time.perf_counter()
    params = _params(sizes)
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        conn.execute("SET max_parallel_workers_per_gather = 0")  # deterministic row order
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute("SET synchronous_commit = off")
        for table in _TABLES:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(table)))
        conn.execute(_read("schema.sql"))
        conn.execute("SELECT setseed(0.42)")
        for statement in _SEED_STATEMENTS:
            conn.execute(statement, params)
        conn.execute(_read("after_load.sql"))
        conn.execute(f"CREATE INDEX {PROJECT_ID_INDEX} ON archon_tasks (project_id)")
        seconds = time.perf_counter() - started
        marker = {
            "schema_version": SCHEMA_VERSION,
            "sizes": sizes.to_json(),
            "seeded_at": time.time(),
            "seconds": round(seconds, 2),
        }
        conn.execute(
            "INSERT INTO archon_demo_meta (key, value) VALUES ('seed', %s)",
            (json.dumps(marker),),
        )
        conn.commit()
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute("VACUUM (ANALYZE)")  # visibility map + statistics, like a settled database
    return time.perf_counter() - started


def apply_faults(dsn: str, faults: Iterable[str]) -> None:
    """Make the database match the switches that live in it (missing_index), and requeue
    jobs a killed worker left running."""
    chosen = set(faults)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        if "missing_index" in chosen:
            conn.execute(f"DROP INDEX IF EXISTS {PROJECT_ID_INDEX}")
        else:
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS {PROJECT_ID_INDEX} ON archon_tasks (project_id)"
            )
        conn.execute("ANALYZE archon_tasks")
        conn.execute("UPDATE archon_agent_jobs SET status = 'queued' WHERE status = 'running'")


def _params(sizes: Sizes) -> dict[str, object]:
    words = _WORDS.split()
    sentences = _sentences(words)
    return {
        "projects": sizes.projects,
        "tasks": sizes.tasks,
        "sources": sizes.sources,
        "pages": sizes.pages,
        "dim": sizes.embedding_dim,
        "lists": sizes.lists,
        "words": words,
        "nw": len(words),
        "per_source": max(1, sizes.pages // max(1, sizes.sources)),
        "sentences": sentences,
        "ns": len(sentences),
    }


def _sentences(words: list[str], count: int = 997) -> list[str]:
    """A fixed pool of pseudo-English sentences (a prime count, so rows mix them well)."""
    rng = random.Random(42)
    pool = []
    for _ in range(count):
        picked = [rng.choice(words) for _ in range(rng.randint(12, 24))]
        pool.append(" ".join(picked).capitalize() + ".")
    return pool


def _read(name: str) -> bytes:
    return (_HERE / name).read_bytes()


# The generated data. %(name)s values are bound; ``WHERE g > 0`` / ``l >= 0`` in the
# inner ARRAY(...) subqueries make them correlated, so they run once per row.
_SEED_STATEMENTS: tuple[str, ...] = (
    """
    CREATE TEMP TABLE seed_sentences ON COMMIT DROP AS
    SELECT (n - 1)::int AS id, s FROM unnest(%(sentences)s::text[]) WITH ORDINALITY AS u(s, n)
    """,
    # projects: Archon-shaped, with JSONB docs/features
    """
    INSERT INTO archon_projects (id, title, description, docs, features, data, github_repo,
                                 pinned, created_at, updated_at)
    SELECT md5('archon-project-' || g)::uuid,
           initcap((%(words)s::text[])[1 + (g * 7) %% %(nw)s]) || ' '
             || (%(words)s::text[])[1 + (g * 13) %% %(nw)s] || ' ' || g,
           'Project ' || g || ': ' || array_to_string(ARRAY(
               SELECT (%(words)s::text[])[1 + floor(random() * %(nw)s)::int]
               FROM generate_series(1, 25) WHERE g > 0), ' '),
           jsonb_build_array(jsonb_build_object('id', 'doc-' || g, 'title', 'PRD',
                                                'document_type', 'prd')),
           jsonb_build_array(jsonb_build_object('name', 'feature-' || (g %% 5),
                                                'status', 'active')),
           '[]'::jsonb,
           'https://github.com/example/project-' || g,
           g %% 17 = 0,
           now() - make_interval(days => g),
           now() - make_interval(hours => g)
    FROM generate_series(1, %(projects)s) AS g
    """,
    # tasks: spread evenly over projects (and so over the whole heap)
    """
    INSERT INTO archon_tasks (id, project_id, parent_task_id, title, description, status,
                              assignee, task_order, feature, sources, code_examples, archived,
                              archived_at, created_at, updated_at)
    SELECT md5('archon-task-' || g)::uuid,
           md5('archon-project-' || (1 + g %% %(projects)s))::uuid,
           NULL,
           initcap((%(words)s::text[])[1 + (g * 7) %% %(nw)s]) || ' '
             || (%(words)s::text[])[1 + (g * 31) %% %(nw)s] || ' '
             || (%(words)s::text[])[1 + (g * 101) %% %(nw)s] || ' #' || g,
           s1.s || ' ' || s2.s || ' ' || s3.s,
           (ARRAY['todo', 'doing', 'review', 'done'])[1 + floor(random() * 4)::int],
           (ARRAY['User', 'Archon', 'AI IDE Agent', 'prp-executor'])[1 + g %% 4],
           g %% 1000,
           'feature-' || (g %% 5),
           '[]'::jsonb,
           '[]'::jsonb,
           (g / %(projects)s) %% 10 = 9,
           CASE WHEN (g / %(projects)s) %% 10 = 9 THEN now() - make_interval(days => g %% 30) END,
           now() - make_interval(mins => g),
           now() - make_interval(mins => g %% 5000)
    FROM generate_series(1, %(tasks)s) AS g
    JOIN pg_temp.seed_sentences AS s1 ON s1.id = g %% %(ns)s
    JOIN pg_temp.seed_sentences AS s2 ON s2.id = (g * 7) %% %(ns)s
    JOIN pg_temp.seed_sentences AS s3 ON s3.id = (g * 13) %% %(ns)s
    """,
    """
    INSERT INTO archon_sources (source_id, title, summary, metadata, created_at, updated_at)
    SELECT substr(md5('archon-source-' || s), 1, 16),
           'docs.' || (%(words)s::text[])[1 + (s * 7) %% %(nw)s] || s || '.dev',
           'Documentation for ' || (%(words)s::text[])[1 + (s * 11) %% %(nw)s] || ' ' || s,
           jsonb_build_object('knowledge_type', CASE WHEN s %% 3 = 0 THEN 'business'
                                                     ELSE 'technical' END,
                              'tags', jsonb_build_array((%(words)s::text[])[1 + s %% %(nw)s]),
                              'source_type', 'url'),
           now() - make_interval(days => s),
           now() - make_interval(hours => s)
    FROM generate_series(1, %(sources)s) AS s
    """,
    """
    INSERT INTO archon_embedding_lists (list_id, centroid)
    SELECT l, ARRAY(SELECT (random() * 2 - 1)::real FROM generate_series(1, %(dim)s)
                    WHERE l >= 0)
    FROM generate_series(0, %(lists)s - 1) AS l
    """,
    # chunks: numbered contiguously per source; each embedding is its list's centroid plus noise
    """
    INSERT INTO archon_crawled_pages (url, chunk_number, content, metadata, source_id,
                                      cluster_id, embedding)
    SELECT 'https://docs.example.dev/' || src.n || '/page-' || ((g - 1) %% %(per_source)s / 8),
           (g - 1) %% %(per_source)s,
           c1.s || ' ' || c2.s || ' ' || c3.s || ' ' || c4.s || ' ' || c5.s || ' ' || c6.s,
           jsonb_build_object('headers', 'Section ' || g %% 50, 'word_count', 140,
                              'char_count', 1000),
           substr(md5('archon-source-' || src.n), 1, 16),
           lst.list_id,
           ARRAY(SELECT lst.centroid[i] + ((random() - 0.5) * 0.8)::real
                 FROM generate_series(1, %(dim)s) AS i WHERE g > 0)
    FROM generate_series(1, %(pages)s) AS g
    CROSS JOIN LATERAL (SELECT least(%(sources)s, 1 + (g - 1) / %(per_source)s) AS n) AS src
    JOIN archon_embedding_lists AS lst ON lst.list_id = (g * 7919) %% %(lists)s
    JOIN pg_temp.seed_sentences AS c1 ON c1.id = g %% %(ns)s
    JOIN pg_temp.seed_sentences AS c2 ON c2.id = (g * 3) %% %(ns)s
    JOIN pg_temp.seed_sentences AS c3 ON c3.id = (g * 7) %% %(ns)s
    JOIN pg_temp.seed_sentences AS c4 ON c4.id = (g * 11) %% %(ns)s
    JOIN pg_temp.seed_sentences AS c5 ON c5.id = (g * 13) %% %(ns)s
    JOIN pg_temp.seed_sentences AS c6 ON c6.id = (g * 17) %% %(ns)s
    ORDER BY lst.list_id, g  -- a list's chunks sit together on disk, as in an ivfflat list
    """,
    """
    UPDATE archon_sources AS s
    SET total_word_count = agg.words
    FROM (SELECT source_id, count(*) * 140 AS words
          FROM archon_crawled_pages GROUP BY source_id) AS agg
    WHERE agg.source_id = s.source_id
    """,
    """
    INSERT INTO archon_project_sources (project_id, source_id, notes)
    SELECT DISTINCT md5('archon-project-' || p)::uuid,
           substr(md5('archon-source-' || (1 + (p * 3 + k) %% %(sources)s)), 1, 16),
           CASE WHEN k = 0 THEN 'business' ELSE 'technical' END
    FROM generate_series(1, %(projects)s) AS p, generate_series(0, 2) AS k
    """,
)
