"""The live view's analysis worker (``diag.liveworker``): a real child process answering
passes over a hand-built bundle, its errors, its replacement and what it hands over."""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from diag.analysis import _ARTEFACTS, report_view
from diag.bundle import Bundle, BundleWriter
from diag.config import RunConfig
from diag.live import PlanView
from diag.liveview import with_probes
from diag.liveworker import AnalysisWorker, WorkerError, serve
from diag.session import SessionContext
from probes.postgres import ActivitySample, SessionRow

T0 = 1_000.0


def _bundle(tmp_path: Path, seconds: int = 40) -> Path:
    targets = [
        {"pid": pid, "name": "python", "cmdline": ["python", "-m", "svc"], "spec": str(pid),
         "role": "", "label": f"svc (pid {pid})"}
        for pid in (101, 102)
    ]  # fmt: skip
    writer = BundleWriter.create(
        tmp_path / "b", {"started_at": T0, "options": {}, "targets": targets}
    )
    writer.emit("session", {"phase": "warmup"}, t=T0)
    writer.emit("session", {"phase": "measuring"}, t=T0 + 5)
    for i in range(seconds):
        t = T0 + i
        writer.emit(
            "load",
            {"type": "tick", "elapsed": float(i), "state": "running", "users": 8,
             "target_users": 8, "stage": "hold", "stage_index": 0, "workers": None,
             "interval": 1.0, "requests": 20, "failures": i % 2, "rps": 20.0,
             "fail_per_s": float(i % 2), "p50_ms": 12.0, "p95_ms": 40.0,
             "p99_ms": 80.0, "avg_ms": 15.0, "total_requests": 20 * (i + 1),
             "total_failures": (i + 1) // 2, "dropped": 0, "mode": "plan"},
            t=t,
        )  # fmt: skip
        for pid, rss in ((101, 60_000_000 + i * 400_000), (102, 50_000_000)):
            writer.emit(
                "process",
                {"type": "process", "pid": pid, "label": f"svc (pid {pid})",
                 "cpu_percent": 10.0 + i % 5, "rss": rss, "uss": rss - 10_000_000,
                 "pss": rss - 5_000_000, "threads": 2, "fds": 9, "connections": 3,
                 "read_bytes": 4096 * i, "write_bytes": 0},
                t=t,
            )  # fmt: skip
    writer.close("complete")
    return writer.path


@pytest.fixture
def worker() -> Iterator[AnalysisWorker]:
    w = AnalysisWorker()
    yield w
    w.close()


def test_a_pass_in_the_worker_is_the_pass_in_process(
    tmp_path: Path, worker: AnalysisWorker
) -> None:
    path = _bundle(tmp_path)
    reply = worker.run(path)
    assert reply.snapshot == report_view(Bundle(path))
    snap = reply.snapshot
    assert len(snap.load) == 40 and [p.pid for p in snap.processes] == [101, 102]
    assert any(f.kind == "memory_leak" for f in snap.findings)  # pid 101 grows 16 MB in 40 s
    assert reply.cpu_s > 0 and reply.rss_bytes > 10 << 20
    final = worker.run(path, final=True)
    assert final.snapshot == report_view(Bundle(path), final=True)
    assert worker.started == 1  # one child served all of it


def test_a_failed_pass_is_one_line_and_the_worker_carries_on(
    tmp_path: Path, worker: AnalysisWorker
) -> None:
    with pytest.raises(WorkerError, match=r"is not a run bundle \(no manifest.json\)$"):
        worker.run(tmp_path / "nothing-here")
    pid = worker.pid
    assert pid is not None
    worker.run(_bundle(tmp_path))
    assert worker.pid == pid and worker.started == 1


def test_a_lost_worker_is_reported_and_replaced(tmp_path: Path, worker: AnalysisWorker) -> None:
    path = _bundle(tmp_path)
    worker.run(path)
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    with pytest.raises(WorkerError, match=r"exited \(code -9\)"):
        worker.run(path)
    assert worker.run(path).snapshot.load and worker.started == 2


def test_a_grown_worker_is_replaced_after_its_pass(tmp_path: Path) -> None:
    path = _bundle(tmp_path)
    worker = AnalysisWorker(grow_limit=-1)  # any RSS counts as grown
    try:
        worker.run(path)  # the first pass sets the baseline
        first = worker.pid
        assert first is not None
        reply = worker.run(path)
        assert reply.snapshot.load and worker.pid is None  # retired, and no longer running
        assert not psutil.pid_exists(first) or psutil.Process(first).status() == "zombie"
        worker.run(path)
        assert worker.started == 2 and worker.pid not in (None, first)
    finally:
        worker.close()


def test_close_ends_the_child_even_mid_pass(tmp_path: Path) -> None:
    path = _bundle(tmp_path)
    worker = AnalysisWorker()
    worker.run(path)
    pid = worker.pid
    assert pid is not None
    errors: list[str] = []

    def passes() -> None:
        try:
            while True:
                worker.run(path)
        except WorkerError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=passes)
    thread.start()
    worker.close()
    thread.join(timeout=10)
    assert not thread.is_alive() and errors == ["closed"]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    with pytest.raises(WorkerError, match="closed"):
        worker.run(path)


def test_the_child_hands_over_what_it_adopted() -> None:
    """A successor starts with its predecessor's parsed captures (seconds of CPU each)."""
    key = ("memray", "/b/artefacts/memray-1.bin", 17, 4096, 101)
    other = ("pyspy", "/b/artefacts/pyspy-1.txt", 17, 99)  # cheap to re-read: not handed
    requests = io.BytesIO()
    for request in (("adopt", pickle.dumps({key: "capture", other: "stacks"})), ("handover",),
                    ("what",)):  # fmt: skip
        pickle.dump(request, requests)
    requests.seek(0)
    replies = io.BytesIO()
    try:
        assert serve(requests, replies) == 0
    finally:
        _ARTEFACTS.next_pass()
        _ARTEFACTS.next_pass()
    replies.seek(0)
    adopted, handed, unknown = (pickle.load(replies) for _ in range(3))
    assert adopted[:2] == ("ok", None)
    assert handed[0] == "ok" and pickle.loads(handed[1]) == {key: "capture"}
    assert unknown[0] == "error" and "unknown request" in unknown[1]


def test_with_probes_adds_what_only_the_session_knows(tmp_path: Path) -> None:
    path = _bundle(tmp_path)
    snap = report_view(Bundle(path))
    assert all(p.profilers == () for p in snap.processes) and snap.blocking == ()
    ctx = SessionContext(RunConfig(shape="stress"), BundleWriter.create(tmp_path / "c", {}), [])
    blocked = SessionRow(pid=7, datname="archon", usename="app", application_name="",
                         client_addr="127.0.0.1", client_port=5000, state="active",
                         wait_event_type="Lock", wait_event="transactionid", query_id=3,
                         xact_age_s=3.0, query_age_s=2.5, state_age_s=2.5,
                         query="UPDATE t SET x = $1", blockers=(9,))  # fmt: skip
    plan = PlanView(queryid=5, source="explain", tree="Seq Scan on t", tips=(), index_advice=())
    ctx.phase = "measuring"
    ctx.publish("profilers", {101: ("pyspy",)})
    idle = dataclasses.replace(blocked, pid=8, state="idle", wait_event_type=None,
                               wait_event=None, blockers=())  # fmt: skip
    ctx.publish("pg_activity", ActivitySample(T0, 1.0, 100, 3, (blocked, idle)))
    ctx.publish("plans", {5: plan})
    live = with_probes(snap, ctx)
    assert {p.pid: p.profilers for p in live.processes} == {101: ("pyspy",), 102: ()}
    assert live.connections == (3, 100)
    assert [(b.pid, b.blocked_by, b.wait) for b in live.blocking] == [
        (7, (9,), "Lock:transactionid")
    ]
    assert live.plans[5] == plan and live.phase == "measuring" and live.shape == "stress"
    assert live.load == snap.load and live.findings == snap.findings
