-- archon-diag: who blocks these lock-waiting backends (pg_blocking_pids is costly: Lock waits only)
SELECT t.pid, pg_blocking_pids(t.pid) AS blockers
FROM unnest(%(pids)s::int[]) AS t(pid)
