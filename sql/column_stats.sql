-- archon-diag: one table's distinct values per column (ANALYZE's estimate; negative = a share of the rows)
SELECT attname::text AS column_name, n_distinct::float8 AS n_distinct
FROM pg_stats
WHERE schemaname = %(schemaname)s
  AND tablename = %(relname)s
  AND NOT inherited
