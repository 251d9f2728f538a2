"""A tiny ASGI app (no framework) for uvicorn-based target tests.

``GET /hot`` spends its time in ``render_etag`` (JSON + MD5 of a big payload), the shape
of Archon's ETag hotspot; anything else answers at once.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

PAYLOAD = [{"id": i, "title": f"task {i}", "status": "todo"} for i in range(10000)]


def render_etag(items: list[dict[str, Any]]) -> str:
    body = json.dumps(items)
    return hashlib.md5(body.encode()).hexdigest()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b"ok"
    if scope["path"] == "/hot":
        body = render_etag(PAYLOAD).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
