-- archon-diag: executes a validated single SELECT inside a READ ONLY transaction rolled back after
EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}
