"""Profilers on small real targets (tests/targets): py-spy, memray, discovery, the command.

Needs ptrace (root or ptrace_scope=0) and gdb for memray; skipped with the reason
when absent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from diag.commands import profile as profile_cmd
from diag.demo.stack import DemoTarget
from diag.hotspots import function_stats
from diag.leaks import memray_suspects
from diag.pgembed import free_port
from probes.errors import DiagError
from probes.memray import MemrayRecorder, attach_debugger, memray_unavailable
from probes.pyspy import PySpyRecorder, record_window
from probes.targets import resolve

pytestmark = pytest.mark.integration
TARGETS = Path(__file__).parents[1] / "targets"
PY = sys.executable


def _can_ptrace() -> bool:
    child = subprocess.Popen([PY, "-c", "import time; time.sleep(5)"])
    try:
        time.sleep(0.2)
        exe = str(Path(PY).parent / "py-spy")
        r = subprocess.run([exe, "dump", "--pid", str(child.pid)], capture_output=True, timeout=20)
        return r.returncode == 0
    finally:
        child.kill()
        child.wait()


needs_ptrace = pytest.mark.skipif(not _can_ptrace(), reason="no ptrace permission for py-spy")
needs_debugger = pytest.mark.skipif(
    not attach_debugger().ok, reason="memray attach cannot use gdb here"
)


def start(script: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([PY, str(TARGETS / script), *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture()
def burner() -> Iterator[subprocess.Popen[str]]:
    proc = start("cpu_burn.py", "60")
    yield proc
    stop(proc)


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``archon-diag profile ARGV`` as ``diag.cli.main`` runs it (one line on DiagError)."""
    parser = argparse.ArgumentParser(prog="archon-diag profile")
    profile_cmd.configure(parser)
    try:
        code = profile_cmd.run(parser.parse_args(argv))
    except DiagError as exc:
        print(f"archon-diag profile: {exc}", file=sys.stderr)
        code = exc.exit_code
    out, err = capsys.readouterr()
    return code, out, err


@needs_ptrace
def test_pyspy_window_finds_the_planted_hotspot_and_stops_early(
    burner: subprocess.Popen[str], tmp_path: Path
) -> None:
    rec = PySpyRecorder(burner.pid, tmp_path / "cpu.txt", duration=20, rate=100)

    async def go() -> None:
        stop_evt = asyncio.Event()
        asyncio.get_running_loop().call_later(3.0, stop_evt.set)
        window = await record_window(rec, stop_evt)
        assert window.error is None and window.samples > 150
        assert window.duration < 6  # SIGINT ended it early and kept the output
        prof = function_stats(window.stacks or rec.result().stacks, window.duration)  # type: ignore[arg-type]
        assert prof.stats[0].func == "planted_hotspot"
        assert prof.stats[0].self_share > 0.6

    t0 = time.monotonic()
    asyncio.run(go())
    assert time.monotonic() - t0 < 8


@needs_ptrace
@needs_debugger
def test_memray_window_ranks_the_leak_first_and_not_the_cache(tmp_path: Path) -> None:
    proc = start("leaky.py", "60")
    try:
        assert memray_unavailable(proc.pid) is None
        rec = MemrayRecorder(proc.pid, tmp_path, duration=5)
        rec.start()
        deadline = time.monotonic() + 40
        while not rec.poll():
            assert time.monotonic() < deadline, "memray window did not finish"
            time.sleep(0.1)
        window = rec.result()
    finally:
        stop(proc)
    assert window.error is None and window.capture is not None
    suspects = memray_suspects(window.capture)
    assert suspects[0].status == "leak", [s.to_json() for s in suspects[:3]]
    assert suspects[0].location.startswith("remember_request")
    cache = [s for s in suspects if s.location.startswith("cache_result")]
    assert cache and cache[0].status != "leak"


def _wait_listening(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"nothing answered on port {port}")


def _uvicorn(port: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PY, "-m", "uvicorn", "--app-dir", str(TARGETS), "asgi_app:app",
         "--port", str(port), "--log-level", "warning", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def test_uvicorn_workers_and_reload_child_are_followed() -> None:
    wport, rport = free_port(), free_port()
    workers = _uvicorn(wport, "--workers", "2")
    reload_ = _uvicorn(rport, "--reload", "--reload-dir", str(TARGETS))
    try:
        _wait_listening(wport)
        _wait_listening(rport)
        by_master = resolve(str(workers.pid))
        assert len(by_master) == 2 and workers.pid not in {t.pid for t in by_master}
        assert {t.pid for t in resolve(f"port:{wport}")} == {t.pid for t in by_master}
        [child] = resolve(str(reload_.pid))
        assert child.pid != reload_.pid and "spawn_main" in " ".join(child.cmdline)
        assert [t.pid for t in resolve(f"port:{rport}")] == [child.pid]
    finally:
        for p in (workers, reload_):
            p.terminate()
            p.wait(10)


@needs_ptrace
def test_profile_command_hotspot_and_gone_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    long_burn = start("cpu_burn.py", "60")
    short = start("cpu_burn.py", "3")
    try:
        code, out, err = cli(
            ["--target", str(long_burn.pid), "--target", str(short.pid), "--duration", "6s",
             "--out", str(tmp_path)],
            capsys,
        )  # fmt: skip
    finally:
        for p in (long_burn, short):
            stop(p)
    assert code == 0, err
    text = " ".join(out.split())  # rich wraps long lines
    assert f"(pid {short.pid}) GONE" in text
    assert f"(pid {short.pid}) exited during the run (marked gone)" in text
    top = text.split(f"(pid {long_burn.pid})", 1)[1].split("function", 1)[1]
    assert top.split("(")[0].split()[-1] == "planted_hotspot"
    assert "Findings (ranked)" in text and "planted_hotspot uses" in text
    assert list(tmp_path.glob(f"profile-{long_burn.pid}.speedscope.json"))


@needs_ptrace
@needs_debugger
def test_profile_command_memray_flags_the_leak_not_the_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leaky = start("leaky.py", "60")
    report = tmp_path / "profile.json"
    try:
        code, _, err = cli(
            ["--target", str(leaky.pid), "--duration", "6s", "--memray", "--format", "json",
             "-o", str(report), "--out", str(tmp_path / "art")],
            capsys,
        )  # fmt: skip
    finally:
        stop(leaky)
    assert code == 0, err
    doc = json.loads(report.read_text())
    assert doc["schema"] == "archon-diag.profile/1"
    [proc] = doc["processes"]
    assert proc["memray_suspects"][0]["location"].startswith("remember_request"), proc
    leaks = [f for f in doc["findings"] if f["kind"] == "memory_leak"]
    assert leaks and leaks[0]["location"]["code"].startswith("remember_request")
    assert not any("cache_result" in (f["location"]["code"] or "") for f in doc["findings"])
    assert Path(proc["artefacts"]["memray"]).is_file()


@needs_ptrace
def test_profile_uvicorn_app_under_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    server = _uvicorn(port)
    done = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=5) as client:
            deadline = time.monotonic() + 15
            while not done.is_set() and time.monotonic() < deadline:
                client.get(f"http://127.0.0.1:{port}/hot")

    try:
        _wait_listening(port)
        th = threading.Thread(target=load)
        th.start()
        code, out, err = cli(
            [
                "--target",
                f"port:{port}",
                "--duration",
                "4s",
                "--format",
                "json",
                "--out",
                str(tmp_path),
            ],
            capsys,
        )
        done.set()
        th.join()
    finally:
        server.terminate()
        server.wait(10)
    assert code == 0, err
    doc = json.loads(out)
    [proc] = doc["processes"]
    assert proc["hotspots"][0]["function"].startswith("render_etag")
    wall = proc["wall_breakdown"]["shares_pct"]
    assert abs(sum(wall.values()) - 100) < 0.5 and wall["on_cpu"] > 10
    assert doc["findings"][0]["kind"] == "cpu_hotspot"


def test_bad_targets_exit_3_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(["--target", "4194303"], capsys)
    assert code == 3 and err.count("\n") == 1 and "no process with PID" in err
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        code, _, err = cli(
            ["--target", str(sleeper.pid), "--duration", "2s", "--out", str(tmp_path)], capsys
        )
    finally:
        sleeper.kill()
        sleeper.wait()
    assert code == 3 and err.count("\n") == 1
    assert "Python" in err or "ptrace" in err


def test_scalene_launch_produces_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = f"scalene:{PY} {TARGETS / 'cpu_burn.py'}"
    code, out, err = cli(
        ["--target", spec, "--duration", "7s", "--format", "json", "--out", str(tmp_path)],
        capsys,
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["scalene"][0].get("error") is None
    found = [f for f in doc["findings"] if f["source"] == "scalene"]
    assert found and found[0]["kind"] == "cpu_hotspot"
    assert any("i * i % 7" in (f["location"]["code"] or "") for f in found)


@pytest.mark.skipif(
    not Path("/usr/bin/python3").exists()
    or subprocess.run(["/usr/bin/python3", "-c", "import memray"], capture_output=True).returncode
    == 0,
    reason="needs a system python3 without memray",
)
@needs_ptrace
def test_memray_missing_in_target_is_one_message_and_the_rest_goes_on(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    proc = subprocess.Popen(
        ["/usr/bin/python3", str(TARGETS / "cpu_burn.py"), "60"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        why = memray_unavailable(proc.pid)
        assert why is not None and "pip install memray" in why
        code, out, err = cli(
            [
                "--target",
                str(proc.pid),
                "--duration",
                "3s",
                "--memray",
                "--format",
                "json",
                "--out",
                str(tmp_path),
            ],
            capsys,
        )
    finally:
        stop(proc)  # type: ignore[arg-type]
    assert code == 0, err
    [p] = json.loads(out)["processes"]
    assert any("memray is not importable" in e for e in p["errors"])
    assert p["hotspots"][0]["function"].startswith("planted_hotspot")


def _stand_in_load(url: str, done: threading.Event) -> None:
    """The routes the CPU faults sit on, in the UI's proportions: project tasks (the ETag),
    polled every 2 s, and now and then a RAG query."""
    from diag.demo.agents import HOT_PROJECT_IDS

    with httpx.Client(base_url=url, timeout=30) as http:
        i = 0
        while not done.is_set():
            http.get(f"/api/projects/{HOT_PROJECT_IDS[i % 2]}/tasks")
            if i % 3 == 0:
                http.post("/api/rag/query", json={"query": f"retry backoff {i}", "match_count": 5})
            i += 1


@needs_ptrace
@pytest.mark.parametrize("faults", ["etag_hotspot,python_similarity", "none"])
def test_profile_the_stand_in_cpu_faults_lead_the_hotspots(
    faults: str,
    demo_target_factory: Callable[[str], DemoTarget],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """(The chat-session leak leading the leak list, and no leak under ``none``, are
    checked on the full demo in test_demo.py.)"""
    target = demo_target_factory(faults)
    done = threading.Event()
    loaders = [
        threading.Thread(target=_stand_in_load, args=(target.server_url, done)) for _ in range(2)
    ]
    for th in loaders:
        th.start()
    try:
        time.sleep(1)  # past the first requests' lazy work
        code, out, err = cli(
            ["--target", str(target.pids["server"]), "--duration", "6s", "--format", "json",
             "--out", str(tmp_path)],
            capsys,
        )  # fmt: skip
    finally:
        done.set()
        for th in loaders:
            th.join()
    assert code == 0, err
    [proc] = json.loads(out)["processes"]
    top = [h["function"].split(" (")[0] for h in proc["hotspots"][:4]]
    planted = [f for f in top if f == "compute_etag" or f.startswith("python_cosine_similarity")]
    if faults == "none":
        assert not planted, top
    else:  # the cosine loop's own time may sit in its generator expression
        assert "compute_etag" in top, top
        assert any(f.startswith("python_cosine_similarity") for f in top), top
