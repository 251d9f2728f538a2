"""memray probe helpers that need no live target."""

from __future__ import annotations

from pathlib import Path

from probes.memray import explain_attach_failure, read_capture

FIX = Path(__file__).parents[1] / "fixtures" / "profile"


def test_read_capture_series() -> None:
    cap = read_capture(FIX / "leaky.memray.bin")
    n = len(cap.times)
    assert n == len(cap.rss) == len(cap.heap)
    assert all(len(loc.live_bytes) == n for loc in cap.locations)
    assert cap.times == tuple(sorted(cap.times)) and cap.duration > 3
    assert cap.heap[-1] > cap.heap[0]  # the planted leak grows the heap
    assert cap.to_json()["snapshots"] == n


def test_attach_failures_are_explained() -> None:
    assert "pip install memray" in explain_attach_failure(
        "ModuleNotFoundError: No module named 'memray'", 5
    )
    assert "ptrace" in explain_attach_failure("ptrace: Operation not permitted.", 5)
    assert explain_attach_failure("", 5).startswith("memray attach failed")
