"""Collectors, one module per source (process, pyspy, memray, scalene, postgres, locust).

Probes gather facts and never rank them: analysis lives in ``diag``. Probes never import
``diag`` or ``tui``.
"""
