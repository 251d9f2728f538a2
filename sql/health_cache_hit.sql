-- archon-diag: buffer cache hit ratios of this database's tables and indexes
SELECT (SELECT sum(heap_blks_hit)::float8 FROM pg_statio_user_tables) AS heap_hit,
       (SELECT sum(heap_blks_read)::float8 FROM pg_statio_user_tables) AS heap_read,
       (SELECT sum(idx_blks_hit)::float8 FROM pg_statio_user_indexes) AS idx_hit,
       (SELECT sum(idx_blks_read)::float8 FROM pg_statio_user_indexes) AS idx_read
