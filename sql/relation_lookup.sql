-- archon-diag: a table by name (schema optional: the first visible one otherwise)
SELECT c.oid::bigint AS relid, n.nspname AS schemaname, c.relname, c.reltuples::float8 AS reltuples
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relname = %(relname)s
  AND c.relkind IN ('r', 'p', 'm')
  AND (n.nspname = %(schemaname)s OR (%(schemaname)s IS NULL AND pg_table_is_visible(c.oid)))
LIMIT 1
