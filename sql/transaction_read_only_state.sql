-- archon-diag: is the current transaction read-only? (checked before EXPLAIN ANALYZE)
SELECT current_setting('transaction_read_only') AS read_only
