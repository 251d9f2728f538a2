-- archon-diag: tables read mostly by sequential scans (index-scan share below the threshold)
SELECT t.schemaname,
       t.relname,
       t.seq_scan::bigint AS seq_scan,
       t.seq_tup_read::bigint AS seq_tup_read,
       coalesce(t.idx_scan, 0)::bigint AS idx_scan,
       t.n_live_tup::bigint AS n_live_tup,
       pg_total_relation_size(t.relid)::bigint AS total_bytes
FROM pg_stat_user_tables AS t
WHERE t.n_live_tup >= %(min_rows)s
  AND t.seq_scan > 0
  AND coalesce(t.idx_scan, 0)::float8 / (t.seq_scan + coalesce(t.idx_scan, 0)) < %(max_index_share)s
ORDER BY t.seq_tup_read DESC
LIMIT 20
