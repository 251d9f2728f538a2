"""The embedded throwaway PostgreSQL cluster (``archon-diag pg``, the demo, the tests).

A cluster made with the system's server binaries, with pg_stat_statements and
auto_explain preloaded, ``jsonlog`` logging, ``track_io_timing`` and ``compute_query_id``,
listening only on 127.0.0.1 and a private socket directory, on a free port. PostgreSQL
refuses to run as root, so when we are root the server runs as an unprivileged user
(``postgres`` when it exists, else ``nobody``) and the cluster directory is handed to it.

Layout of a cluster directory::

    DIR/cluster.json   state: port, server user, bin dir (written by us)
    DIR/data/          the data directory; DIR/data/log/postgresql.json is the jsonlog
    DIR/sock/          the private unix socket directory
    DIR/startup.log    pg_ctl's log of server start-up
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from probes.errors import PrerequisiteError, UsageError

DEBIAN_PACKAGES = "postgresql postgresql-contrib"
SUPERUSER = "postgres"
LOG_FILE = "postgresql.json"


@dataclass(frozen=True)
class ClusterInfo:
    """What a caller needs to use a cluster."""

    dir: str
    data_dir: str
    log_dir: str
    socket_dir: str
    port: int
    dsn: str
    running: bool
    pid: int | None
    server_user: str
    version: str

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @property
    def jsonlog(self) -> Path:
        return Path(self.log_dir) / LOG_FILE


def default_dir() -> Path:
    """``$ARCHON_DIAG_PG_DIR`` or a per-user folder under /var/tmp (reachable by the
    unprivileged server user when we run as root, and kept across runs)."""
    env = os.environ.get("ARCHON_DIAG_PG_DIR")
    if env:
        return Path(env)
    return Path("/var/tmp") / f"archon-diag-{os.getuid()}" / "pg"


def find_bindir() -> Path:
    """The PostgreSQL server binaries: ``pg_config --bindir``, PATH, or Debian's layout."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            candidates.append(Path(out))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    candidates.extend(debian)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PrerequisiteError(
        f"PostgreSQL server binaries (initdb, pg_ctl) not found; install {DEBIAN_PACKAGES} "
        "(apt-get install postgresql postgresql-contrib) or put pg_config on PATH"
    )


def _version_key(path: Path) -> float:
    try:
        return float(path.parent.name)
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class _ServerUser:
    name: str
    uid: int
    gid: int


def _server_user() -> _ServerUser:
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return _ServerUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return _ServerUser(name, entry.pw_uid, entry.pw_gid)
    raise PrerequisiteError(
        "running as root and no unprivileged user (postgres or nobody) exists to run "
        "PostgreSQL; create one with: useradd --system postgres"
    )


def _run(
    user: _ServerUser, argv: list[str], *, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    as_root = os.geteuid() == 0
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LC_ALL": "C.UTF-8",
        "LANG": "C.UTF-8",
        "HOME": "/tmp",
    }
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd="/",
            user=user.uid if as_root else None,
            group=user.gid if as_root else None,
            extra_groups=[] if as_root else None,
        )
    except subprocess.TimeoutExpired:
        raise PrerequisiteError(f"{Path(argv[0]).name} did not finish in {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit code {proc.returncode}"
        raise PrerequisiteError(f"{Path(argv[0]).name} failed: {last}")
    return proc


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _conf(sock_dir: Path) -> str:
    return f"""# written by archon-diag: a throwaway diagnostics cluster
listen_addresses = '127.0.0.1'
unix_socket_directories = '{sock_dir}'
max_connections = 100
shared_buffers = 128MB
shared_preload_libraries = 'pg_stat_statements,auto_explain'
compute_query_id = on
pg_stat_statements.max = 5000
pg_stat_statements.track = top
track_io_timing = on
track_activity_query_size = 4096
auto_explain.log_format = json
auto_explain.log_analyze = on
auto_explain.log_buffers = on
auto_explain.log_timing = on
auto_explain.log_min_duration = 100
logging_collector = on
log_destination = 'jsonlog'
log_directory = 'log'
log_filename = 'postgresql.log'
log_file_mode = 0644
log_rotation_size = 0
log_min_messages = warning
# a throwaway cluster: durability is not needed, seeding speed is
fsync = off
synchronous_commit = off
full_page_writes = off
"""


def _state_path(base: Path) -> Path:
    return base / "cluster.json"


def _read_state(base: Path) -> dict[str, object]:
    try:
        data = json.loads(_state_path(base).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _pid(data_dir: Path) -> int | None:
    """The postmaster PID if that process is alive."""
    try:
        first = (data_dir / "postmaster.pid").read_text().splitlines()[0]
        pid = int(first)
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def _dsn(port: int, dbname: str = "postgres") -> str:
    return f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{dbname}"


def _info(base: Path, port: int, user: str, version: str) -> ClusterInfo:
    data = base / "data"
    pid = _pid(data)
    return ClusterInfo(
        dir=str(base),
        data_dir=str(data),
        log_dir=str(data / "log"),
        socket_dir=str(base / "sock"),
        port=port,
        dsn=_dsn(port),
        running=pid is not None,
        pid=pid,
        server_user=user,
        version=version,
    )


def _server_version(bindir: Path) -> str:
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"\(PostgreSQL\)\s+(\S+)", out)
    return match.group(1) if match else "unknown"


def _check_reachable(user: _ServerUser, base: Path) -> None:
    if os.geteuid() != 0:
        return
    probe = _run(user, ["/usr/bin/test", "-x", str(base.parent)], check=False)
    if probe.returncode != 0:
        raise UsageError(
            f"{base} is not reachable by the unprivileged user {user.name!r} that runs "
            "PostgreSQL for root; choose a --dir under /tmp or /var/tmp"
        )


def up(base: Path | None = None, port: int | None = None) -> ClusterInfo:
    """Create the cluster on first use, start it if needed, and return how to reach it."""
    base = (base or default_dir()).absolute()
    bindir = find_bindir()
    user = _server_user()
    version = _server_version(bindir)
    data = base / "data"
    state = _read_state(base)

    if _pid(data) is not None:
        return _info(base, int(str(state.get("port", 0))), user.name, version)

    base.mkdir(parents=True, exist_ok=True)
    _check_reachable(user, base)
    sock = base / "sock"
    sock.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        for path in (base, sock):
            os.chown(path, user.uid, user.gid)
    os.chmod(sock, 0o700)

    if not (data / "PG_VERSION").exists():
        if data.exists():
            shutil.rmtree(data)
        _run(
            user,
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
        )
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude = 'archon_diag.conf'\n")
        (data / "archon_diag.conf").write_text(_conf(sock))
        if os.geteuid() == 0:
            os.chown(data / "archon_diag.conf", user.uid, user.gid)
        fresh = True
    else:
        fresh = False

    stored = state.get("port")
    if port is None:
        port = int(str(stored)) if stored and port_free(int(str(stored))) else free_port()
    elif not port_free(port):
        raise UsageError(f"port {port} on 127.0.0.1 is in use; pick another with --port")

    startup_log = base / "startup.log"
    _run(
        user,
        [
            str(bindir / "pg_ctl"),
            "start",
            "-D",
            str(data),
            "-w",
            "-t",
            "60",
            "-l",
            str(startup_log),
            "-o",
            f"-p {port}",
        ],
    )
    _state_path(base).write_text(
        json.dumps({"port": port, "server_user": user.name, "bindir": str(bindir)}, indent=2)
    )
    if fresh:
        _create_extensions(port)
    return _info(base, port, user.name, version)


def _create_extensions(port: int) -> None:
    import psycopg

    for db in ("template1", "postgres"):
        with psycopg.connect(_dsn(port, db), autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


def status(base: Path | None = None) -> ClusterInfo | None:
    """The cluster's state, or None when no cluster was ever created there."""
    base = (base or default_dir()).absolute()
    if not (base / "data" / "PG_VERSION").exists():
        return None
    state = _read_state(base)
    user = str(state.get("server_user", _server_user().name))
    bindir = Path(str(state["bindir"])) if "bindir" in state else find_bindir()
    return _info(base, int(str(state.get("port", 0))), user, _server_version(bindir))


def down(base: Path | None = None, purge: bool = False) -> bool:
    """Stop the server (fast shutdown); with ``purge`` delete the cluster. True if it ran."""
    base = (base or default_dir()).absolute()
    data = base / "data"
    pid = _pid(data)
    if pid is not None:
        bindir = find_bindir()
        user = _server_user()
        proc = _run(
            user,
            [str(bindir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w", "-t", "30"],
            check=False,
        )
        if proc.returncode != 0 and _pid(data) is not None:
            os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 15
        while _pid(data) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
    if purge and base.exists():
        shutil.rmtree(base)
    return pid is not None
