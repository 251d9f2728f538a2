-- archon-diag: tables with stale planner statistics or many dead rows
SELECT t.schemaname,
       t.relname,
       t.n_live_tup::bigint AS n_live_tup,
       t.n_dead_tup::bigint AS n_dead_tup,
       t.n_mod_since_analyze::bigint AS n_mod_since_analyze,
       extract(epoch FROM now() - greatest(t.last_analyze, t.last_autoanalyze))::float8
           AS analyze_age_s,
       extract(epoch FROM now() - greatest(t.last_vacuum, t.last_autovacuum))::float8
           AS vacuum_age_s
FROM pg_stat_user_tables AS t
WHERE t.n_live_tup + t.n_dead_tup >= %(min_rows)s
  AND (t.n_dead_tup::float8 >= %(max_ratio)s * greatest(t.n_live_tup, 1)
       OR t.n_mod_since_analyze::float8 >= %(max_ratio)s * greatest(t.n_live_tup, 1)
       OR (t.last_analyze IS NULL AND t.last_autoanalyze IS NULL))
ORDER BY t.n_mod_since_analyze + t.n_dead_tup DESC
LIMIT 20
