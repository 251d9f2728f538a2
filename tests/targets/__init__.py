"""Small real programs the profiler tests attach to (each one plants one behaviour)."""
