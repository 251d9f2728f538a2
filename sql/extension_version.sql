-- installed version of one extension in the current database (no row: not installed)
SELECT extversion FROM pg_extension WHERE extname = %(name)s
