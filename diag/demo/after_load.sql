-- Keys and secondary indexes, built after the bulk load (much faster than maintaining
-- them row by row while loading).
ALTER TABLE archon_tasks ADD PRIMARY KEY (id);
ALTER TABLE archon_tasks ADD FOREIGN KEY (project_id)
    REFERENCES archon_projects (id) ON DELETE CASCADE;
ALTER TABLE archon_crawled_pages ADD PRIMARY KEY (id);
ALTER TABLE archon_crawled_pages ADD FOREIGN KEY (source_id) REFERENCES archon_sources (source_id);
CREATE INDEX idx_archon_tasks_status ON archon_tasks (status);
CREATE INDEX idx_archon_tasks_assignee ON archon_tasks (assignee);
CREATE INDEX idx_archon_tasks_order ON archon_tasks (task_order);
CREATE INDEX idx_archon_tasks_archived ON archon_tasks (archived);
CREATE INDEX idx_archon_tasks_title_trgm ON archon_tasks USING gin (title gin_trgm_ops);
CREATE INDEX idx_archon_crawled_pages_source_id ON archon_crawled_pages (source_id);
CREATE INDEX idx_archon_crawled_pages_cluster ON archon_crawled_pages (cluster_id);
CREATE INDEX idx_archon_project_sources_source ON archon_project_sources (source_id);
CREATE INDEX idx_archon_agent_jobs_queued ON archon_agent_jobs (id) WHERE status = 'queued';
