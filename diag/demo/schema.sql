-- The Archon stand-in's schema, modelled on Archon's v1 tables (archon_projects,
-- archon_tasks, archon_sources, archon_crawled_pages, archon_project_sources) plus the
-- agent job queue. Indexes follow Archon's: single-column btrees on tasks. The index on
-- archon_tasks(project_id) is created/dropped by the missing_index fault switch at start,
-- so it is not here. Embeddings are real[] (Archon: pgvector); cluster_id plays the part
-- of pgvector's ivfflat list assignment.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE archon_demo_meta (
    key   text PRIMARY KEY,
    value jsonb NOT NULL
);

CREATE TABLE archon_projects (
    id          uuid PRIMARY KEY,
    title       text NOT NULL,
    description text NOT NULL DEFAULT '',
    docs        jsonb NOT NULL DEFAULT '[]',
    features    jsonb NOT NULL DEFAULT '[]',
    data        jsonb NOT NULL DEFAULT '[]',
    github_repo text,
    pinned      boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- archon_tasks and archon_crawled_pages get their keys in after_load.sql (bulk load speed)
CREATE TABLE archon_tasks (
    id             uuid NOT NULL,
    project_id     uuid,
    parent_task_id uuid,
    title          text NOT NULL,
    description    text NOT NULL DEFAULT '',
    status         text NOT NULL DEFAULT 'todo'
                   CHECK (status IN ('todo', 'doing', 'review', 'done')),
    assignee       text NOT NULL DEFAULT 'User',
    task_order     integer NOT NULL DEFAULT 0,
    feature        text,
    sources        jsonb NOT NULL DEFAULT '[]',
    code_examples  jsonb NOT NULL DEFAULT '[]',
    archived       boolean NOT NULL DEFAULT false,
    archived_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE archon_sources (
    source_id        text PRIMARY KEY,
    title            text NOT NULL,
    summary          text NOT NULL DEFAULT '',
    metadata         jsonb NOT NULL DEFAULT '{}',
    total_word_count integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE archon_embedding_lists (
    list_id  integer PRIMARY KEY,
    centroid real[] NOT NULL
);

CREATE TABLE archon_crawled_pages (
    id           bigserial,
    url          text NOT NULL,
    chunk_number integer NOT NULL,
    content      text NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}',
    source_id    text NOT NULL,
    cluster_id   integer NOT NULL,
    embedding    real[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE archon_project_sources (
    project_id uuid REFERENCES archon_projects (id) ON DELETE CASCADE,
    source_id  text REFERENCES archon_sources (source_id) ON DELETE CASCADE,
    linked_at  timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL DEFAULT 'system',
    notes      text,
    PRIMARY KEY (project_id, source_id)
);

-- No foreign key to archon_projects on purpose: enqueueing must never wait on a project lock.
CREATE TABLE archon_agent_jobs (
    id              bigserial PRIMARY KEY,
    agent           text NOT NULL,
    project_id      uuid,
    prompt          text NOT NULL,
    max_tokens      integer NOT NULL DEFAULT 80,
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    enqueued_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at      timestamptz,
    finished_at     timestamptz,
    queue_wait_ms   double precision,
    ttft_ms         double precision,
    llm_latency_ms  double precision,
    tool_ms         double precision,
    completion_ms   double precision,
    llm_retries     integer NOT NULL DEFAULT 0,
    tokens          integer,
    result          text,
    error           text
);
