-- archon-diag: KPI archon preset: median job completion time, enqueue to finish (ms), of the jobs finished in the last 30 s
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY completion_ms) AS completion_p50_ms
FROM archon_agent_jobs
WHERE finished_at > now() - interval '30 seconds'
