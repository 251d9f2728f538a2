-- archon-diag: estimated plan (nothing is executed)
EXPLAIN (FORMAT JSON) {statement}
