-- archon-diag: non-unique indexes with (almost) no scans since the statistics were reset
SELECT s.schemaname,
       s.relname,
       s.indexrelname,
       s.idx_scan::bigint AS idx_scan,
       pg_relation_size(s.indexrelid)::bigint AS index_bytes
FROM pg_stat_user_indexes AS s
JOIN pg_index AS i ON i.indexrelid = s.indexrelid
WHERE NOT i.indisunique
  AND NOT i.indisprimary
  AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conindid = s.indexrelid)
  AND s.idx_scan <= %(max_scans)s
ORDER BY pg_relation_size(s.indexrelid) DESC
LIMIT 20
