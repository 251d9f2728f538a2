-- archon-diag: make the current transaction read-only (first statement of the transaction)
SET TRANSACTION READ ONLY
