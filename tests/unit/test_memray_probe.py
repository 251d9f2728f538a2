"""memray probe helpers that need no live target."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from probes import memray as memray_probe
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


def test_the_gdb_fix_is_built_only_in_a_private_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gdb runs as root with the fix preloaded: a directory someone else can write to
    (a shared /tmp) must not supply it."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    shared = tmp_path / f"archon-diag-{os.geteuid()}"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(OSError, match="not a private directory"):
        memray_probe._build_shim()
    shared.chmod(0o700)
    if shutil.which("cc") or shutil.which("gcc"):
        built = Path(memray_probe._build_shim())
        assert built.parent == shared and built.stat().st_size > 0
        assert memray_probe._build_shim() == str(built)  # built once, then reused
