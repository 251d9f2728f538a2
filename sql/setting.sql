-- one server setting; no row when the role may not read it
SELECT setting FROM pg_settings WHERE name = %(name)s
