-- archon-diag: statements running longer than the threshold right now
SELECT a.pid,
       a.datname,
       a.usename,
       a.application_name,
       a.wait_event_type,
       a.wait_event,
       extract(epoch FROM now() - a.query_start)::float8 AS query_age_s,
       left(a.query, 400) AS query
FROM pg_stat_activity AS a
WHERE a.state = 'active'
  AND a.backend_type = 'client backend'
  AND a.pid <> pg_backend_pid()
  AND now() - a.query_start > make_interval(secs => %(min_age_s)s)
ORDER BY a.query_start
LIMIT 20
