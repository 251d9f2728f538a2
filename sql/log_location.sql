-- archon-diag: where the server writes its jsonlog (superuser or granted roles only)
SELECT pg_current_logfile('jsonlog') AS logfile, current_setting('data_directory') AS data_directory
