-- archon-diag: volatility of functions by name ('v' volatile, 's' stable, 'i' immutable)
SELECT p.proname::text AS name, n.nspname::text AS schemaname, p.provolatile::text AS volatility
FROM pg_proc AS p
JOIN pg_namespace AS n ON n.oid = p.pronamespace
WHERE p.proname = ANY(%(names)s)
