-- archon-diag: KPI archon preset: agent jobs waiting in the queue right now
SELECT count(*) AS queued
FROM archon_agent_jobs
WHERE status = 'queued'
