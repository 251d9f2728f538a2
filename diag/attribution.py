"""Which endpoint's requests a finding slows: from the route handler on its stacks.

A CPU hotspot's (or a blocked loop's) stacks pass through the web framework's routing
(starlette / fastapi) into the application's handler function; a statement's call-site
dump does the same. The handler is matched to the load's endpoint names by the words they
share (``list_project_tasks`` ↔ ``GET /api/projects/{id}/tasks``, ``rag_query`` ↔
``POST /api/rag/query``), the verb in the handler's name picking the method. The evidence
carries the endpoint's measured latency from the load's per-endpoint figures.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from diag.dbanalysis import n_plus_one_at
from diag.findings import Finding
from diag.hotspots import fold_stack, frame_info, frame_label

Frame = tuple[str, str, int]
_ROUTING = frozenset({"fastapi", "starlette", "flask", "django", "aiohttp", "litestar"})
_STOP = frozenset(
    {"api", "get", "list", "create", "update", "delete", "post", "put", "patch", "app",
     "locals", "handler", "endpoint", "route", "v1", "v2", "id", "all", "the", "by", "one"}
)  # fmt: skip
_VERBS = {
    "create": "POST",
    "add": "POST",
    "post": "POST",
    "update": "PUT",
    "put": "PUT",
    "patch": "PATCH",
    "delete": "DELETE",
    "remove": "DELETE",
    "list": "GET",
    "get": "GET",
}


def _words(text: str) -> set[str]:
    text = re.sub(r"\{[^}]*\}", " ", text.split("?", 1)[0])
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    out = set()
    for w in re.split(r"[^A-Za-z0-9]+", text.lower()):
        if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        if w and w not in _STOP and not w.isdigit():
            out.add(w)
    return out


def handler_of(stack: Sequence[Frame]) -> str | None:
    """The application function the router called (root-first stack), if any."""
    last_routing = None
    for i, frame in enumerate(stack):
        info = frame_info(frame[1]) if frame[1] else None
        if info is not None and info.origin != "app" and info.module in _ROUTING:
            last_routing = i
    if last_routing is None:
        return None
    for frame in stack[last_routing + 1 :]:
        if frame[1] and frame_info(frame[1]).origin == "app":
            return frame[0].rsplit(".", 1)[-1]
    return None


def match_endpoint(handler: str, endpoints: Iterable[str]) -> str | None:
    """The endpoint whose path words best match the handler's name.

    >>> eps = ["GET /api/projects", "GET /api/projects/{id}/tasks", "PUT /api/tasks/{id}",
    ...        "GET /api/tasks?filter", "POST /api/rag/query"]
    >>> match_endpoint("list_project_tasks", eps), match_endpoint("update_task", eps)
    ('GET /api/projects/{id}/tasks', 'PUT /api/tasks/{id}')
    >>> match_endpoint("rag_query", eps), match_endpoint("list_projects", eps)
    ('POST /api/rag/query', 'GET /api/projects')
    >>> match_endpoint("compute_etag", eps) is None
    True
    """
    words = _words(handler)
    verb = next((_VERBS[w] for w in re.split(r"[^a-z]+", handler.lower()) if w in _VERBS), None)
    best, best_score = None, 0.0
    for ep in endpoints:
        method, _, path = ep.partition(" ") if " " in ep else ("", "", ep)
        if verb and method and method != verb:
            continue
        pw = _words(path)
        if not pw or not words:
            continue
        score = len(words & pw) / len(words | pw)
        if score > best_score:
            best, best_score = ep, score
    return best if best_score >= 0.3 else None


def handlers_by_function(windows: Iterable[Any]) -> dict[str, Counter[str]]:
    """For each folded self-frame label: the handlers its samples ran under."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for w in windows:
        if w.stacks is None:
            continue
        for stack, count in w.stacks.stacks.items():
            handler = handler_of(stack)
            if handler is None:
                continue
            folded = fold_stack(stack)
            label = frame_label(folded.self_frame) if folded else frame_label(stack[-1])
            out[label][handler] += count
    return out


def attach_endpoints(
    findings: list[Finding],
    handlers: Mapping[str, Counter[str]],
    statement_handlers: Mapping[int, Counter[str]],
    load: Mapping[str, Any] | None,
) -> list[Finding]:
    """Set ``location.endpoint`` and ``evidence["explains_latency_of"]`` where the stacks
    say which endpoint's requests the finding runs in."""
    rows = {str(e["name"]): e for e in (load or {}).get("endpoints") or []}
    if not rows:
        return findings
    out = []
    for f in findings:
        counter: Counter[str] | None = None
        if f.location.queryid is not None and f.location.queryid in statement_handlers:
            counter = statement_handlers[f.location.queryid]
        elif f.location.code and f.location.code in handlers:
            counter = handlers[f.location.code]
        if counter:
            total = sum(counter.values())
            explained: list[dict[str, Any]] = []
            for handler, n in counter.most_common(3):
                ep = match_endpoint(handler, rows)
                if ep is None or any(x["endpoint"] == ep for x in explained):
                    continue
                row = rows[ep]
                explained.append({
                    "endpoint": ep, "handler": handler, "share_of_samples": round(n / total, 3),
                    "p50_ms": row.get("p50_ms"), "p95_ms": row.get("p95_ms"),
                    "requests": row.get("requests"),
                })  # fmt: skip
            if explained:
                if f.kind == "n_plus_one":
                    f = n_plus_one_at(f, explained[0]["endpoint"])
                loc = f.location
                if loc.endpoint is None:
                    loc = dataclasses.replace(loc, endpoint=explained[0]["endpoint"])
                f = dataclasses.replace(
                    f, location=loc, evidence={**f.evidence, "explains_latency_of": explained}
                )
        out.append(f)
    return out
