-- archon-diag: server version and pg_stat_statements version (NULL: not installed here)
SELECT current_setting('server_version') AS version,
       current_setting('server_version_num')::int AS version_num,
       (SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements') AS pss_version,
       current_database() AS database
