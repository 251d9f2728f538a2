-- archon-diag: KPI archon preset: median queue wait (ms) of the jobs a worker picked up in the last 30 s
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY queue_wait_ms) AS queue_wait_p50_ms
FROM archon_agent_jobs
WHERE started_at > now() - interval '30 seconds'
