"""archon-diag core: CLI, configuration, session orchestration, analysis, ranking,
report renderers, the run bundle and the embedded PostgreSQL manager.

``diag`` may import ``probes``; it never imports ``tui``.
"""

__version__ = "0.1.0"
