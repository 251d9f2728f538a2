"""The stand-in's fault switches: names, what each plants, and parsing ``all|none|a,b``.

Each fault plants one bottleneck that real Archon users hit, at a clearly named code
location, so a probe can find it by its own symptom (see docs/demo-target.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from probes.errors import UsageError

ENV_VAR = "ARCHON_DEMO_FAULTS"

# name -> (where it lives, the symptom a probe sees)
FAULTS: dict[str, str] = {
    "n_plus_one": "GET /api/projects loads each project's sources with one query per project",
    "missing_index": "no index on archon_tasks(project_id): per-project task queries scan it",
    "etag_hotspot": "ETag = MD5 of a full json.dumps of the payload, computed after the full fetch",
    "python_similarity": "/api/rag/query scores chunks with a pure-Python cosine loop",
    "chat_session_leak": "agent-chat sessions and messages live in a module-level dict forever",
    "lock_contention": "the agent worker holds a project row lock while it waits on the LLM",
    "blocking_call": "knowledge summary makes synchronous database calls inside an async handler",
    "pool_starvation": "the server's connection pool is too small for its concurrency",
}


def names() -> list[str]:
    return list(FAULTS)


def parse_faults(spec: str | Iterable[str] | None = None) -> frozenset[str]:
    """``all``, ``none``, or a comma list of names; ``None`` reads $ARCHON_DEMO_FAULTS
    (default ``all``). An unknown name is a one-line UsageError listing the valid ones."""
    if spec is None:
        spec = os.environ.get(ENV_VAR, "").strip() or "all"
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    items = [s for s in items if s]
    if items == ["all"]:
        return frozenset(FAULTS)
    if items in (["none"], []):
        return frozenset()
    unknown = [s for s in items if s not in FAULTS]
    if unknown:
        raise UsageError(
            f"unknown fault {unknown[0]!r}; use all, none or a comma list of: {', '.join(FAULTS)}"
        )
    return frozenset(items)


def to_spec(faults: Iterable[str]) -> str:
    """The canonical text form (``none`` or names in FAULTS order)."""
    chosen = set(faults)
    if not chosen:
        return "none"
    return ",".join(name for name in FAULTS if name in chosen)
