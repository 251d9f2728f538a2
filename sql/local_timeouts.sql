-- archon-diag: statement and lock timeouts for the current transaction only
SELECT set_config('statement_timeout', %(statement_timeout)s, true),
       set_config('lock_timeout', %(lock_timeout)s, true)
