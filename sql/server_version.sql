-- server version, as text and as a number (e.g. 150018)
SELECT current_setting('server_version') AS version,
       current_setting('server_version_num')::int AS version_num
