-- may this role read other sessions' statements and activity?
SELECT r.rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER') AS allowed
FROM pg_roles AS r
WHERE r.rolname = current_user
