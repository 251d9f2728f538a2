-- archon-diag: forget this backend's hypothetical indexes
SELECT hypopg_reset()
