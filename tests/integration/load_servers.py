"""Tiny loopback HTTP servers for the load tests (127.0.0.1, free port, one thread each).

- ``echo``: answers every path at once with a small JSON body;
- ``queue``: one request at a time, ``service_ms`` each, so latency rises with concurrency
  (about users x service_ms for closed-loop users) — a server with a knee;
- ``archon``: the Archon routes the shipped scenario calls, with Archon-shaped JSON.

Every server counts requests by (method, path) and by the ``X-Worker-Pid`` header.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, kind: str, service_ms: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.kind = kind
        self.service_ms = service_ms
        self.lock = threading.Lock()
        self.serial = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()
        self.pids: Counter[str] = Counter()
        self.paths: list[str] = []
        self.next_id = 1000

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hang up mid-request when Locust stops: not worth a traceback

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def total(self) -> int:
        with self.lock:
            return sum(self.counts.values())


_ROUTES = [
    (re.compile(r"^/api/projects/[^/]+/tasks$"), "/api/projects/{id}/tasks"),
    (re.compile(r"^/api/progress/[^/]+$"), "/api/progress/{id}"),
    (re.compile(r"^/api/tasks/[^/]+$"), "/api/tasks/{id}"),
    (
        re.compile(r"^/api/agent-chat/sessions/[^/]+/messages$"),
        "/api/agent-chat/sessions/{id}/messages",
    ),
]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        srv = self.server
        path = self.path.split("?", 1)[0]
        body = self._body() if self.command in ("POST", "PUT") else None
        with srv.lock:
            srv.counts[(self.command, path)] += 1
            srv.pids[self.headers.get("X-Worker-Pid", "-")] += 1
            if len(srv.paths) < 5000:
                srv.paths.append(f"{self.command} {self.path}")
        if srv.kind == "queue":
            with srv.serial:  # one at a time: the queue is what makes latency rise
                time.sleep(srv.service_ms / 1000)
        elif srv.service_ms:
            time.sleep(srv.service_ms / 1000)
        if srv.kind != "archon":
            self._reply(200, {"ok": True})
            return
        status, payload = self._archon(path, body)
        self._reply(status, payload)

    def _archon(self, path: str, body: Any) -> tuple[int, Any]:
        srv = self.server
        if path == "/api/projects":
            return 200, {"projects": [{"id": f"proj-{i}", "title": f"P{i}"} for i in range(3)]}
        if path.startswith("/api/projects/") and path.endswith("/tasks"):
            pid = path.split("/")[3]
            return 200, {"tasks": [{"id": f"{pid}-task-{i}", "status": "todo"} for i in range(4)]}
        if path == "/api/tasks" and self.command == "GET":
            return 200, {"tasks": [{"id": "t-1"}], "pagination": {"total": 1}}
        if path == "/api/tasks" and self.command == "POST":
            with srv.lock:
                srv.next_id += 1
                new_id = f"new-{srv.next_id}"
            return 200, {"message": "created", "task": {"id": new_id, **(body or {})}}
        if path.startswith("/api/tasks/") and self.command == "PUT":
            return 200, {"task": {"id": path.rsplit("/", 1)[1]}}
        if path == "/api/agent-chat/sessions":
            with srv.lock:
                srv.next_id += 1
                return 200, {"session_id": f"chat-{srv.next_id}"}
        if path == "/agents/run":
            with srv.lock:
                srv.next_id += 1
                return 202, {"job_id": f"job-{srv.next_id}", "status": "queued"}
        if path.startswith("/api/progress/"):
            return 404, {"detail": "operation not found"}
        return 200, {"ok": True, "items": [], "total": 0}

    do_GET = _handle
    do_POST = _handle
    do_PUT = _handle


@contextmanager
def serve(kind: str = "echo", service_ms: float = 0.0) -> Iterator[_Server]:
    server = _Server(kind, service_ms)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def route_of(path: str) -> str:
    """The fixed name a concrete path should be reported under."""
    bare = path.split("?", 1)[0]
    for pattern, name in _ROUTES:
        if pattern.match(bare):
            return name
    return bare
