-- archon-diag: a hypothetical index (hypopg: private to this backend, nothing is written)
SELECT indexrelid::bigint AS indexrelid FROM hypopg_create_index(%(ddl)s)
