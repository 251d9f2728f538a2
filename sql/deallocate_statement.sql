-- archon-diag: drop our prepared statement
DEALLOCATE {name}
