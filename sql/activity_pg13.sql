-- archon-diag: one active-session-history sample (PostgreSQL 13: no query_id); cheap, no locks
SELECT a.pid,
       a.datname,
       a.usename,
       a.application_name,
       host(a.client_addr) AS client_addr,
       a.client_port,
       a.state,
       a.wait_event_type,
       a.wait_event,
       NULL::bigint AS query_id,
       extract(epoch FROM now() - a.xact_start)::float8 AS xact_age_s,
       extract(epoch FROM now() - a.query_start)::float8 AS query_age_s,
       extract(epoch FROM now() - a.state_change)::float8 AS state_age_s,
       CASE WHEN a.state IS DISTINCT FROM 'idle' THEN left(a.query, 400) END AS query
FROM pg_stat_activity AS a
WHERE a.backend_type = 'client backend'
  AND a.pid <> pg_backend_pid()
