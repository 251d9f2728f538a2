-- archon-diag: one table's indexes with their key columns in order (NULL for an expression)
SELECT ic.relname AS index_name,
       am.amname AS method,
       i.indisunique AS is_unique,
       i.indisvalid AS is_valid,
       i.indpred IS NOT NULL AS is_partial,
       array(SELECT a.attname::text
             FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY AS k(attnum, ord)
             LEFT JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             ORDER BY k.ord) AS columns
FROM pg_index AS i
JOIN pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_am AS am ON am.oid = ic.relam
WHERE i.indrelid = %(relid)s::oid
ORDER BY ic.relname
