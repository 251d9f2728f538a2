-- archon-diag: pg_stat_statements 1.11+ (PostgreSQL 17: block times renamed) counters without text, per (userid, dbid, queryid)
SELECT s.userid::bigint AS userid,
       s.dbid::bigint AS dbid,
       s.queryid,
       bool_or(s.toplevel) AS toplevel,
       sum(s.calls)::bigint AS calls,
       sum(s.total_exec_time)::float8 AS total_exec_ms,
       sum(s.total_plan_time)::float8 AS total_plan_ms,
       sum(s.rows)::bigint AS rows,
       sum(s.shared_blks_hit)::bigint AS shared_blks_hit,
       sum(s.shared_blks_read)::bigint AS shared_blks_read,
       sum(s.shared_blks_dirtied)::bigint AS shared_blks_dirtied,
       sum(s.shared_blks_written)::bigint AS shared_blks_written,
       sum(s.temp_blks_read)::bigint AS temp_blks_read,
       sum(s.temp_blks_written)::bigint AS temp_blks_written,
       sum(s.shared_blk_read_time + s.local_blk_read_time)::float8 AS blk_read_ms,
       sum(s.shared_blk_write_time + s.local_blk_write_time)::float8 AS blk_write_ms
FROM pg_stat_statements(false) AS s
WHERE s.queryid IS NOT NULL
  AND (%(all_databases)s OR s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()))
GROUP BY s.userid, s.dbid, s.queryid
