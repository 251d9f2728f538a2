-- archon-diag: plan prepared statements generically in this transaction only
SET LOCAL plan_cache_mode = force_generic_plan
