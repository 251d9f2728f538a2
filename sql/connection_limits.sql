-- archon-diag: connection limits (they only change on restart: read once per connection)
SELECT current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS reserved_connections
