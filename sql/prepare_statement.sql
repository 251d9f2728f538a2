-- archon-diag: prepare text with $n placeholders to plan it generically (nothing is executed)
PREPARE {name} ({types}) AS {statement}
