-- fails with "must be loaded via shared_preload_libraries" when not preloaded
SELECT count(*) AS n FROM pg_stat_statements
