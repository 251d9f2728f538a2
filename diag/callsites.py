"""Which Python call site, under which route handler, issues a statement.

Every couple of seconds the PostgreSQL probe finds the target processes that hold
connections to the database (pg_stat_activity's client port matched to the targets' open
sockets) and takes one non-blocking ``py-spy dump --locals`` of each. A thread inside a
database client call (psycopg, asyncpg, ...) shows the statement it is running in the
nearest ``query``/``sql`` argument from the client frame outwards (the client's own, or
the application helper that called it; py-spy shows the first ~128 characters). That text is
matched to a statement by its shape (literals and placeholders -- ``%s``, ``%(name)s``,
``$1``, numbers, quoted strings -- replaced, whitespace and case folded): first to the
sessions of that process that pg_stat_activity shows at that moment (the exact
query_id), else to the statement texts pg_stat_statements reported. A thread whose query
matches no statement, or several, is not counted: a call site is only recorded when the
text says which statement it is. This works for asyncio servers too, where a dump shows
only the coroutine running at that instant: the statement is read from its own frame,
not guessed from which session happened to be active.

Only the matched statement's queryid, the call site, the handler and the client port are
kept; the locals' text (which may hold literals) never leaves this module.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diag.findings import Finding
from diag.hotspots import frame_info, frame_label

_CLIENTS = ("psycopg", "psycopg2", "asyncpg", "pg8000", "sqlalchemy", "databases")
_QUERY_LOCALS = ("query", "sql", "statement", "operation")
_MIN_SHAPE = 16  # a shorter prefix ("select ?") says too little to pick a statement


@dataclass(frozen=True)
class ClientCall:
    """One thread caught inside a database client call."""

    site: str  # the deepest application frame: "load_sources (app/db.py:42)"
    handler: str | None  # the route handler the stack passes through, if any
    shape: str  # the sent statement's shape (a prefix when py-spy truncated it)
    truncated: bool


def sql_shape(text: str) -> str:
    """A statement's text with literals and placeholders replaced and space folded.

    >>> sql_shape("SELECT * FROM t WHERE a = %s AND b = 'x''y' AND c IN ($1, 42)")
    'select * from t where a = ? and b = ? and c in (?, ?)'
    """
    t = re.sub(r"'(?:[^']|'')*'", "?", text)
    t = re.sub(r"%\(\w+\)s|%s|\$\d+|\$\?|(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])", "?", t)
    return re.sub(r"\s+", " ", t).strip().lower()


def _repr_text(r: str) -> tuple[str, bool] | None:
    """The text of a str/bytes local as py-spy shows it, and whether it was cut short."""
    r = r.strip()
    if r.startswith(("b'", 'b"')):
        r = r[1:]
    if len(r) < 2 or r[0] not in "'\"":
        return None  # not a string (a Composed, a TextClause ...)
    quote = r[0]
    truncated = r.endswith("..." + quote) or not r.endswith(quote)
    body = r[1:].removesuffix(quote).removesuffix("...")
    body = body.replace("\\n", " ").replace("\\t", " ").replace("\\'", "'").replace('\\"', '"')
    return body, truncated


def _prefix_shape(text: str, truncated: bool) -> str:
    if not truncated:
        return sql_shape(text)
    if text.count("'") % 2:  # cut inside a literal: keep what precedes it
        text = text[: text.rfind("'")]
    shape = sql_shape(text)
    return shape.rsplit(" ", 1)[0] if " " in shape else ""  # the last word may be cut


def client_calls(threads: Iterable[Mapping[str, Any]]) -> list[ClientCall]:
    """The database client calls in one ``py-spy dump --json --locals``, with the text of
    the statement each one is sending."""
    from diag.attribution import handler_of

    out = []
    for thread in threads:
        frames = thread.get("frames") or []  # innermost first
        text = None
        in_client = False
        for f in frames:  # from the innermost frame out: the client call, then its callers
            info = frame_info(str(f.get("filename") or ""))
            in_client = in_client or (info.origin != "app" and info.module in _CLIENTS)
            if not in_client:
                continue
            for local in f.get("locals") or []:
                if local.get("name") in _QUERY_LOCALS and local.get("repr"):
                    text = _repr_text(str(local["repr"]))
                    if text:
                        break
            if text:
                break
        if not text:
            continue
        stack = [
            (str(f.get("name", "?")), str(f.get("filename") or ""), int(f.get("line") or 0))
            for f in reversed(frames)
        ]
        apps = [fr for fr in stack if fr[1] and frame_info(fr[1]).origin == "app"]
        site = frame_label(apps[-1]) if apps else None
        shape = _prefix_shape(*text)
        if site is None or len(shape) < _MIN_SHAPE:
            continue
        out.append(ClientCall(site, handler_of(stack), shape, text[1]))
    return out


@dataclass(frozen=True)
class Shape:
    """A statement's shape as a database view shows it (cut short when ``truncated``)."""

    text: str
    truncated: bool = False

    @classmethod
    def of(cls, text: str) -> Shape:
        """A shape from a view's text; a trailing "…" marks one cut short."""
        truncated = text.endswith("…")
        return cls(_prefix_shape(text.removesuffix("…"), truncated), truncated)


def match_statement(call: ClientCall, shapes: Mapping[int, Shape]) -> int | None:
    """The one queryid whose statement has this call's shape (allowing for either text
    having been cut short); None when none or several do."""
    hits = set()
    for qid, s in shapes.items():
        if len(s.text) < _MIN_SHAPE:
            continue
        if (
            s.text == call.shape
            or (call.truncated and s.text.startswith(call.shape))
            or (s.truncated and call.shape.startswith(s.text))
        ):
            hits.add(qid)
    return hits.pop() if len(hits) == 1 else None


# ---- call sites from the profiles: the statement a call passes, read from its source ----

_SQL_START = re.compile(r"\s*(select|insert|update|delete|with|values|merge|copy|call)\b", re.I)
_MAX_SOURCE_BYTES = 2_000_000
# path -> (mtime, [(first line, last line, statement text)] of the calls passing SQL text)
_SOURCES: dict[str, tuple[float, list[tuple[int, int, str]]]] = {}


def _literal(node: ast.expr, constants: Mapping[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _sql_calls(path: str) -> list[tuple[int, int, str]]:
    """The calls in a source file that pass SQL text as a string literal or a module-level
    string constant (first argument, or a ``query``/``sql`` keyword)."""
    try:
        st = os.stat(path)
        cached = _SOURCES.get(path)
        if cached is not None and cached[0] == st.st_mtime:
            return cached[1]
        if st.st_size > _MAX_SOURCE_BYTES:
            return []
        tree = ast.parse(Path(path).read_bytes(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return []
    constants = {
        t.id: n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
        and isinstance(n.value.value, str)
        for t in n.targets
        if isinstance(t, ast.Name)
    }  # fmt: skip
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        args = [*node.args[:1], *(k.value for k in node.keywords if k.arg in _QUERY_LOCALS)]
        for arg in args:
            text = _literal(arg, constants)
            if text and _SQL_START.match(text):
                calls.append((node.lineno, node.end_lineno or node.lineno, text))
                break
    if len(_SOURCES) >= 256:
        _SOURCES.clear()
    _SOURCES[path] = (st.st_mtime, calls)
    return calls


def source_statement(path: str, line: int) -> str | None:
    """The SQL text the innermost call spanning ``path:line`` passes, read from the
    application's source; None when it passes none (built at run time, an ORM's)."""
    spans = [c for c in _sql_calls(path) if c[0] <= line <= c[1]]
    return min(spans, key=lambda c: c[1] - c[0])[2] if spans else None


def _client_site(stack: Sequence[tuple[str, str, int]]) -> tuple[str, str, int] | None:
    """The deepest application frame before a stack (root first) enters a database client."""
    site = None
    for frame in stack:
        info = frame_info(frame[1]) if frame[1] else None
        if info is None:
            continue
        if info.origin == "app":
            site = frame
        elif info.module in _CLIENTS:
            return site
    return None


def profiled_calls(windows: Iterable[Any], shapes: Mapping[int, Shape]) -> list[dict[str, Any]]:
    """Call sites from the py-spy recordings: a sampled stack inside a database client call
    whose call site passes a statement's text in its source (a literal, or a module-level
    constant) counts, per sample, for that statement, its site and its route handler.

    A dump catches an asyncio server inside its client only while that coroutine is on
    the CPU, so one every 2 s sees a cheap, frequent statement a few times a minute at
    best; the recordings see it in every window. The source only says *which* statement:
    a site whose text matches none, or several, is not counted. Events are shaped like
    the probe's ``callsites`` events, with ``samples`` as their weight."""
    from diag.attribution import handler_of

    matched: dict[tuple[str, int], int | None] = {}
    counts: Counter[tuple[int, int, str, str, str | None]] = Counter()
    for w in windows:
        if w.stacks is None:
            continue
        for stack, n in w.stacks.stacks.items():
            frame = _client_site(stack)
            if frame is None:
                continue
            key = (frame[1], frame[2])
            if key not in matched:
                text = source_statement(*key)
                shape = sql_shape(text) if text else ""
                matched[key] = (
                    match_statement(ClientCall("", None, shape, False), shapes)
                    if len(shape) >= _MIN_SHAPE
                    else None
                )
            qid = matched[key]
            if qid is not None:
                counts[(qid, w.pid, w.label, frame_label(frame), handler_of(stack))] += n
    return [
        {"queryid": qid, "pid": pid, "process": label, "site": site, "handler": handler,
         "samples": n, "via": "profile"}
        for (qid, pid, label, site, handler), n in counts.items()
    ]  # fmt: skip


def attach_callsites(findings: list[Finding], events: Iterable[Mapping[str, Any]]) -> list[Finding]:
    """Add the Python call site that issued each statement, where one was caught."""
    sites: dict[int, Counter[str]] = defaultdict(Counter)
    procs: dict[int, str] = {}
    for e in events:
        if e.get("queryid") is None or not e.get("site"):
            continue
        sites[int(e["queryid"])][str(e["site"])] += int(e.get("samples", 1))
        procs[int(e["queryid"])] = str(e.get("process", ""))
    out = []
    for f in findings:
        qid = f.location.queryid
        if qid is not None and qid in sites:
            site, hits = sites[qid].most_common(1)[0]
            evidence = {**f.evidence, "issued_from": site, "issued_from_samples": hits}
            loc = f.location
            if loc.code is None:
                loc = dataclasses.replace(loc, code=site, process=loc.process or procs[qid])
            f = dataclasses.replace(f, evidence=evidence, location=loc)
        out.append(f)
    return out


def statement_handlers(events: Iterable[Mapping[str, Any]]) -> dict[int, Counter[str]]:
    """queryid -> the route handlers its call sites ran under."""
    out: dict[int, Counter[str]] = {}
    for e in events:
        if e.get("queryid") is not None and e.get("handler"):
            out.setdefault(int(e["queryid"]), Counter())[str(e["handler"])] += int(
                e.get("samples", 1)
            )
    return out


def session_shapes(sessions: Sequence[Any]) -> dict[int, Shape]:
    """query_id -> shape for the pg_stat_activity sessions that show their statement
    (their text has its literals redacted and ends in "…" when cut short)."""
    return {
        int(s.query_id): Shape.of(s.query)
        for s in sessions
        if s.query_id and s.query and s.state in ("active", "idle in transaction")
    }
