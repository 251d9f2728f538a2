-- archon-diag: is this extension installed in the current database?
SELECT extversion FROM pg_extension WHERE extname = %(name)s
