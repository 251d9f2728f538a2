"""Prerequisite checks for ``archon-diag doctor``: each one OK / WARN / FAIL with the fix.

Checks are small functions returning ``Check`` records; nothing here changes anything.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from probes import pgconn
from probes.errors import DiagError
from probes.memray import attach_debugger
from probes.sqlfiles import load_sql
from probes.targets import resolve

OK, WARN, FAIL = "OK", "WARN", "FAIL"
PTRACE_FIX = (
    "run as root, or `sysctl kernel.yama.ptrace_scope=0`, or in a container add "
    "--cap-add SYS_PTRACE"
)


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""
    required: bool = True

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def tool_path(name: str) -> str | None:
    """A console tool from our own environment first, then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    return shutil.which(name)


def check_pyspy() -> Iterator[Check]:
    exe = tool_path("py-spy")
    if exe is None:
        yield Check("py-spy", FAIL, "py-spy not found", "pip install py-spy")
        return
    yield Check("py-spy", OK, exe)
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        proc = subprocess.run(
            [exe, "dump", "--pid", str(child.pid)], capture_output=True, text=True, timeout=20
        )
        if proc.returncode == 0 and "Thread" in proc.stdout:
            yield Check("py-spy attach", OK, f"attached to a test child (pid {child.pid})")
        else:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            yield Check("py-spy attach", FAIL, lines[-1] if lines else "attach failed", PTRACE_FIX)
    except subprocess.TimeoutExpired:
        yield Check("py-spy attach", FAIL, "py-spy dump timed out", PTRACE_FIX)
    finally:
        child.kill()
        child.wait()


def check_debugger() -> Iterator[Check]:
    """memray attach injects itself with gdb: tried on a throwaway process (gdb 13 breaks
    the process it calls into on CPUs with AMX unless our XSAVE fix is preloaded)."""
    debugger = attach_debugger()
    name = "gdb (memray attach)"
    if debugger.ok:
        yield Check(name, OK, debugger.why, required=False)
    else:
        yield Check(name, WARN, debugger.why, "apt-get install gdb gcc", required=False)


def check_memray_in_target(spec: str) -> Iterator[Check]:
    for target in resolve(spec):
        exe = Path(f"/proc/{target.pid}/exe")
        name = f"memray in {target.label}"
        try:
            interpreter = str(exe.resolve(strict=True))
        except OSError:
            yield Check(name, WARN, "cannot read the target's interpreter", required=False)
            continue
        proc = subprocess.run(
            [interpreter, "-c", "import memray"], capture_output=True, text=True, timeout=30
        )
        if proc.returncode == 0:
            yield Check(name, OK, f"{interpreter} imports memray", required=False)
        else:
            yield Check(
                name,
                WARN,
                f"{interpreter} cannot import memray (memray windows will be skipped)",
                f"{interpreter} -m pip install memray",
                required=False,
            )


def _one(conn: psycopg.Connection[tuple[object, ...]], query: str, **params: object) -> object:
    row = conn.execute(load_sql(query), params or None).fetchone()
    return row[0] if row else None


def check_postgres(dsn: str) -> Iterator[Check]:
    try:
        conn = pgconn.connect(dsn)
    except DiagError as exc:
        yield Check("PostgreSQL reachable", FAIL, str(exc), "start the server or fix --dsn")
        return
    with conn:
        yield Check("PostgreSQL reachable", OK, "connected")
        version = _one(conn, "server_version")
        yield Check("server version", OK, f"PostgreSQL {version}")

        ext = _one(conn, "extension_version", name="pg_stat_statements")
        if ext is None:
            yield Check(
                "pg_stat_statements installed",
                FAIL,
                "extension not created in this database",
                "CREATE EXTENSION pg_stat_statements;  (as a superuser, in this database)",
            )
        else:
            yield Check("pg_stat_statements installed", OK, f"version {ext}")
            try:
                _one(conn, "statements_probe")
                yield Check("pg_stat_statements preloaded", OK, "statistics are collected")
            except psycopg.Error as exc:
                yield Check(
                    "pg_stat_statements preloaded",
                    FAIL,
                    str(exc).strip().splitlines()[0],
                    "add pg_stat_statements to shared_preload_libraries and restart the server",
                )

        preload = _one(conn, "setting", name="shared_preload_libraries")
        if preload is None:
            yield Check(
                "auto_explain",
                WARN,
                "cannot read shared_preload_libraries with this role",
                "GRANT pg_read_all_settings TO <role>",
                required=False,
            )
        elif "auto_explain" in str(preload):
            yield Check("auto_explain", OK, "preloaded: real plans available", required=False)
        else:
            yield Check(
                "auto_explain",
                WARN,
                "not preloaded: plans fall back to generic EXPLAIN",
                "add auto_explain to shared_preload_libraries; auto_explain.log_format = json",
                required=False,
            )
        dest = _one(conn, "setting", name="log_destination")
        if dest is not None and "jsonlog" in str(dest):
            yield Check("jsonlog", OK, "log_destination includes jsonlog", required=False)
        else:
            yield Check(
                "jsonlog",
                WARN,
                f"log_destination = {dest!r}: auto_explain plans cannot be joined by query_id",
                "log_destination = 'jsonlog' (PostgreSQL 15+) with logging_collector = on",
                required=False,
            )
        allowed = _one(conn, "stats_privilege")
        if allowed:
            yield Check(
                "stats privilege", OK, "can read every session's statements", required=False
            )
        else:
            yield Check(
                "stats privilege",
                WARN,
                "other roles' query texts and activity are hidden",
                "GRANT pg_read_all_stats TO <role>",
                required=False,
            )


def run_checks(dsn: str | None, targets: list[str]) -> list[Check]:
    checks: list[Check] = [*check_pyspy(), *check_debugger()]
    for spec in targets:
        try:
            checks.extend(check_memray_in_target(spec))
        except DiagError as exc:
            checks.append(Check(f"target {spec}", FAIL, str(exc), "check the target SPEC"))
    if dsn:
        checks.extend(check_postgres(dsn))
    else:
        checks.append(
            Check(
                "PostgreSQL",
                WARN,
                "no --dsn given: database checks skipped",
                "pass --dsn postgresql://user@host:port/db",
                required=False,
            )
        )
    return checks


def passed(checks: list[Check]) -> bool:
    return not any(c.status == FAIL and c.required for c in checks)
