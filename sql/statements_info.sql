-- archon-diag: pg_stat_statements 1.9+ evictions and last reset (deltas are unsound after either)
SELECT dealloc::bigint AS dealloc, extract(epoch FROM stats_reset)::float8 AS stats_reset_epoch
FROM pg_stat_statements_info
