-- archon-diag: generic plan of text with $n placeholders (PostgreSQL 16+; nothing is executed)
EXPLAIN (GENERIC_PLAN, FORMAT JSON) {statement}
