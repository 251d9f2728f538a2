"""The Archon stand-in: a small but real service shaped like Archon's v1 Python backend.

A FastAPI server (``diag.demo.server``) and an agents service with a PostgreSQL job queue
(``diag.demo.agents``) over a seeded database (``diag.demo.seed``), with fault switches
(``diag.demo.faults``) that each plant one realistic bottleneck. ``diag.demo.stack`` starts
and stops the whole thing; see docs/demo-target.md. This package is the *diagnosed*
service: the diagnostics never import it.
"""
