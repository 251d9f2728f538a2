-- archon-diag: normalized text of some statements (reads the text file once; call rarely)
SELECT s.queryid, min(s.query) AS query
FROM pg_stat_statements(true) AS s
WHERE s.queryid = ANY(%(queryids)s)
GROUP BY s.queryid
