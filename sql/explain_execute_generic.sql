-- archon-diag: generic plan of a prepared statement with NULL parameters (nothing is executed)
EXPLAIN (FORMAT JSON) EXECUTE {name} ({args})
