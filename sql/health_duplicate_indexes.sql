-- archon-diag: indexes with the same table, keys, operator classes, expressions and predicate
SELECT n.nspname AS schemaname,
       c.relname,
       array_agg(ic.relname ORDER BY ic.relname) AS indexes,
       sum(pg_relation_size(i.indexrelid))::bigint AS total_bytes
FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indrelid
JOIN pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%'
GROUP BY n.nspname, c.relname, i.indrelid, i.indkey::text, i.indclass::text,
         coalesce(pg_get_expr(i.indexprs, i.indrelid), ''),
         coalesce(pg_get_expr(i.indpred, i.indrelid), '')
HAVING count(*) > 1
ORDER BY 4 DESC
