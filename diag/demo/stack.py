"""Start and stop the whole stand-in: PostgreSQL, seeded database, server and agents.

``up()`` starts the embedded cluster (unless a DSN is given), creates and seeds the
``archon`` database once, applies the database-side fault switches, then starts the two
services as detached processes (``python -m diag.demo.server`` / ``diag.demo.agents``) and
waits until both answer ``/health``. It writes ``state.json`` in the stand-in's directory;
``down()`` stops exactly the processes recorded there (checking their command lines, so a
reused PID is never signalled) and the cluster if ``up()`` started it.

Directory layout (default ``/var/tmp/archon-diag-$UID/demo``, or ``$ARCHON_DIAG_DEMO_DIR``)::

    DIR/state.json   pids, ports, dsn, faults of the running stand-in (written by up)
    DIR/pg/          the embedded cluster (when no DSN was given)
    DIR/server.log   DIR/agents.log   the services' output
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

import diag
from diag import pgembed
from diag.demo import seed
from diag.demo.common import DSN_ENV
from diag.demo.faults import ENV_VAR as FAULTS_ENV
from diag.demo.faults import parse_faults, to_spec
from diag.demo.seed import Sizes
from probes.errors import PrerequisiteError, UsageError
from probes.redact import redact_dsn

DEFAULT_SERVER_PORT = 8181
DEFAULT_AGENTS_PORT = 8052
HOST = "127.0.0.1"
STATE_FILE = "state.json"
SERVER_MODULE = "diag.demo.server"
AGENTS_MODULE = "diag.demo.agents"
READY_TIMEOUT_S = 60.0

# Services this process started, kept so ``down`` can reap them (no zombies, no
# "subprocess still running" warnings when the Popen objects would be collected).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class DemoTarget:
    """A running stand-in: where to reach it and which processes to profile."""

    dsn: str
    server_url: str
    agents_url: str
    pids: dict[str, int]  # {"server": pid, "agents": pid}
    faults: tuple[str, ...]
    dir: str
    seeded_now: bool = False
    seed_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The contract's object: dsn, server_url, agents_url, pids (server, agents)."""
        return {
            "dsn": self.dsn,
            "server_url": self.server_url,
            "agents_url": self.agents_url,
            "pids": dict(self.pids),
        }

    def state(self) -> dict[str, Any]:
        return asdict(self)


def default_dir() -> Path:
    env = os.environ.get("ARCHON_DIAG_DEMO_DIR")
    if env:
        return Path(env)
    return Path("/var/tmp") / f"archon-diag-{os.getuid()}" / "demo"


def up(
    base_dir: Path | str | None = None,
    faults: str | Iterable[str] | None = None,
    server_port: int | None = None,
    agents_port: int | None = None,
    dsn: str | None = None,
    sizes: Sizes | None = None,
    dbname: str = seed.DEFAULT_DBNAME,
    workers: int = 4,
    llm_429_rate: float = 0.05,
    llm_time_scale: float = 1.0,
    pool_size: int = 10,
) -> DemoTarget:
    """Start the stand-in (idempotent when it already runs with the same faults).

    ``dsn`` is an admin DSN of an existing server (the database ``dbname`` is created on
    it); without one the embedded cluster in ``DIR/pg`` is used. ``faults`` is
    ``all|none|a,b`` or names (``None``: ``$ARCHON_DEMO_FAULTS``, default all).
    """
    base = Path(base_dir or default_dir()).absolute()
    chosen = parse_faults(faults)
    sizes = sizes or Sizes()
    server_port = DEFAULT_SERVER_PORT if server_port is None else server_port
    agents_port = DEFAULT_AGENTS_PORT if agents_port is None else agents_port

    running = status(base)
    if running is not None:
        if set(running.faults) == chosen:
            return running
        raise UsageError(
            f"the stand-in in {base} already runs with faults {to_spec(running.faults)}; "
            "stop it first with: archon-diag demo-target down"
        )
    _check_port(server_port, "server", "--server-port")
    _check_port(agents_port, "agents", "--agents-port")

    base.mkdir(parents=True, exist_ok=True)
    owns_cluster = dsn is None
    if dsn is None:
        dsn = pgembed.up(base / "pg").dsn
    try:
        db_dsn = seed.ensure_database(dsn, dbname)
        seeded_now, seconds = seed.ensure_seeded(db_dsn, sizes)
        seed.apply_faults(db_dsn, chosen)
    except Exception as exc:
        if isinstance(exc, UsageError | PrerequisiteError):
            raise
        raise PrerequisiteError(
            f"cannot prepare the stand-in database at {redact_dsn(dsn)}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        ) from None

    spec = to_spec(chosen)
    env = {**os.environ, DSN_ENV: db_dsn, FAULTS_ENV: spec}
    pkg_root = str(Path(diag.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    common = ["--host", HOST, "--faults", spec]
    server_cmd = [
        sys.executable, "-m", SERVER_MODULE, "--port", str(server_port),
        "--pool-size", str(pool_size), *common,
    ]  # fmt: skip
    agents_cmd = [
        sys.executable, "-m", AGENTS_MODULE, "--port", str(agents_port),
        "--workers", str(workers), "--llm-429-rate", str(llm_429_rate),
        "--llm-time-scale", str(llm_time_scale), *common,
    ]  # fmt: skip
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["server"] = _spawn(server_cmd, env, base / "server.log")
        procs["agents"] = _spawn(agents_cmd, env, base / "agents.log")
        target = DemoTarget(
            dsn=db_dsn,
            server_url=f"http://{HOST}:{server_port}",
            agents_url=f"http://{HOST}:{agents_port}",
            pids={name: proc.pid for name, proc in procs.items()},
            faults=tuple(n for n in spec.split(",") if n != "none"),
            dir=str(base),
            seeded_now=seeded_now,
            seed_seconds=round(seconds, 2),
        )
        _write_state(base, target, owns_cluster)
        _wait_ready(procs, target, base)
    except BaseException:
        for proc in procs.values():
            _stop_pid(proc.pid)
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        (base / STATE_FILE).unlink(missing_ok=True)
        raise
    return target


def status(base_dir: Path | str | None = None) -> DemoTarget | None:
    """The running stand-in recorded in the directory, or None (stale state is ignored)."""
    base = Path(base_dir or default_dir()).absolute()
    state = _read_state(base)
    if not state:
        return None
    target = _target_from_state(state)
    if target is None or not all(_is_ours(pid) for pid in target.pids.values()):
        return None
    return target


def down(base_dir: Path | str | None = None, stop_cluster: bool | None = None) -> bool:
    """Stop the services ``up`` started (and its embedded cluster); True if any ran.

    ``stop_cluster`` defaults to whether ``up`` started the cluster itself.
    """
    base = Path(base_dir or default_dir()).absolute()
    state = _read_state(base)
    target = _target_from_state(state) if state else None
    stopped = False
    if target is not None:
        for pid in target.pids.values():
            stopped |= _stop_pid(pid)
    owns = bool(state.get("owns_cluster")) if state else (base / "pg").exists()
    if (owns if stop_cluster is None else stop_cluster) and (base / "pg").exists():
        stopped |= pgembed.down(base / "pg")
    (base / STATE_FILE).unlink(missing_ok=True)
    return stopped


# --- helpers ----------------------------------------------------------------------------


def _check_port(port: int, name: str, option: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            raise UsageError(
                f"port {port} on {HOST} is in use, so the {name} cannot start; "
                f"stop what uses it or choose another with {option} N"
            ) from None


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd="/",
            start_new_session=True,  # detached: survives the CLI, gets no terminal signals
        )
    _CHILDREN[proc.pid] = proc
    return proc


def _wait_ready(procs: dict[str, subprocess.Popen[bytes]], target: DemoTarget, base: Path) -> None:
    urls = {"server": target.server_url, "agents": target.agents_url}
    pending = set(procs)
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while pending:
            for name in sorted(pending):
                code = procs[name].poll()
                if code is not None:
                    raise PrerequisiteError(
                        f"the stand-in {name} exited with code {code} while starting: "
                        f"{_last_line(base / f'{name}.log')} (log: {base / name}.log)"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(urls[name] + "/health").status_code == 200:
                        pending.discard(name)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise PrerequisiteError(
                    f"the stand-in {', '.join(sorted(pending))} did not answer /health within "
                    f"{READY_TIMEOUT_S:.0f}s; see the logs in {base}"
                )
            time.sleep(0.1)


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    return lines[-1].strip() if lines else "no output"


def _is_ours(pid: int) -> bool:
    """True if ``pid`` is alive and is one of the stand-in's service processes."""
    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return False
    return SERVER_MODULE in cmdline or AGENTS_MODULE in cmdline


def _stop_pid(pid: int, timeout: float = 10.0) -> bool:
    """SIGTERM (uvicorn shuts down cleanly), then SIGKILL; only our own service processes."""
    child = _CHILDREN.pop(pid, None)
    if not _is_ours(pid):
        if child is not None:
            child.poll()
        return False
    proc = psutil.Process(pid)
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except psutil.TimeoutExpired:
            proc.kill()
            # a killed process whose parent (a demo that was itself killed) never reaps
            # it stays a zombie: it is dead, and the other services must still be stopped
            with contextlib.suppress(psutil.TimeoutExpired):
                proc.wait(timeout=5)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)
    return True


def _write_state(base: Path, target: DemoTarget, owns_cluster: bool) -> None:
    data = {**target.state(), "owns_cluster": owns_cluster, "started_at": time.time()}
    tmp = base / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(base / STATE_FILE)


def _read_state(base: Path) -> dict[str, Any]:
    try:
        data = json.loads((base / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _target_from_state(state: dict[str, Any]) -> DemoTarget | None:
    try:
        return DemoTarget(
            dsn=str(state["dsn"]),
            server_url=str(state["server_url"]),
            agents_url=str(state["agents_url"]),
            pids={str(k): int(v) for k, v in dict(state["pids"]).items()},
            faults=tuple(str(f) for f in state.get("faults", ())),
            dir=str(state.get("dir", "")),
            seeded_now=False,
            seed_seconds=float(state.get("seed_seconds", 0.0)),
        )
    except (KeyError, TypeError, ValueError):
        return None
