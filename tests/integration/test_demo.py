"""``archon-diag demo --headless``, end to end, as a newcomer runs it (issue 7): its own
embedded PostgreSQL and stand-in at default sizes, the Archon scenario, every probe.

Every planted fault must be found and identified by its code location or its statement,
the costliest at the top; the clean control (``--faults none``) has no critical finding
and no leak; ``compare`` of the two lists the faults as resolved.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "diag"]

Finding = dict[str, Any]


def _where(f: Finding) -> str:
    loc = f["location"]
    return " ".join(str(loc.get(k) or "") for k in ("code", "sql", "endpoint", "process"))


# fault -> how its finding names it: the code location or the statement, never the switch
FAULTS: dict[str, Callable[[Finding], bool]] = {
    "n_plus_one": lambda f: (
        f["kind"] == "n_plus_one"
        and "archon_project_sources" in _where(f)
        and "GET /api/projects" in f["title"]
    ),
    "missing_index": lambda f: (
        f["kind"] == "missing_index"
        and "archon_tasks (project_id)" in f["title"]
        and "CREATE INDEX" in f["recommendation"]
    ),
    "etag_hotspot": lambda f: (
        f["kind"] == "cpu_hotspot" and (f["location"]["code"] or "").startswith("compute_etag (")
    ),
    "python_similarity": lambda f: (
        f["kind"] == "cpu_hotspot" and "python_cosine_similarity" in (f["location"]["code"] or "")
    ),
    "chat_session_leak": lambda f: (
        f["kind"] == "memory_leak" and "post_chat_message" in (f["location"]["code"] or "")
    ),
    "lock_contention": lambda f: (
        f["kind"] == "lock_contention" and f["location"]["queryid"] is not None
    ),
    "blocking_call": lambda f: (
        f["kind"] == "event_loop_blocking"
        and "summary_counts_blocking" in (f["location"]["code"] or "")
    ),
    "pool_starvation": lambda f: (
        f["kind"] == "pool_starvation" and "archon-server" in (f["location"]["process"] or "")
    ),
}


@pytest.fixture(scope="module")
def demo_dir() -> Iterator[Path]:
    # /var/tmp, readable by all: the unprivileged PostgreSQL user must reach the cluster
    base = Path(tempfile.mkdtemp(prefix="archon-diag-test-demo-cli-", dir="/var/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        subprocess.run(
            [*CLI, "demo-target", "down", "--dir", str(base / "standin")],
            cwd=ROOT, capture_output=True, timeout=120,
        )  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


def _demo(base: Path, name: str, *args: str) -> tuple[Path, dict[str, Any]]:
    out = base / name
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [*CLI, "demo", "--headless", "--dir", str(base / "standin"), "--out", str(out), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for report in ("report.json", "report.md", "report.html", "report.txt", "junit.xml"):
        assert (out / report).is_file(), report
    return out, json.loads((out / "report.json").read_text())


def test_demo_finds_every_fault_and_the_clean_control_none(demo_dir: Path) -> None:
    all_out, report = _demo(demo_dir, "all", "--duration", "60s")
    assert report["run"]["status"] == "complete"
    assert report["load"]["totals"]["requests"] > 300
    findings = report["findings"]
    missing = [fault for fault, named in FAULTS.items() if not any(map(named, findings))]
    assert not missing, [(f["kind"], f["title"][:80], _where(f)[:80]) for f in findings]
    # ranked, and a planted fault is the costliest
    assert [f["score"] for f in findings] == sorted((f["score"] for f in findings), reverse=True)
    assert any(named(findings[0]) for named in FAULTS.values()), findings[0]["title"]
    html = (all_out / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), (
        "report.html must be self-contained"
    )

    none_out, clean = _demo(demo_dir, "none", "--faults", "none", "--duration", "30s",
                            "--warmup", "5s")  # fmt: skip
    assert clean["run"]["status"] == "complete"
    assert clean["load"]["totals"]["requests"] > 100
    critical = [f["title"] for f in clean["findings"] if f["severity"] == "critical"]
    assert not critical, critical
    assert not [f["title"] for f in clean["findings"] if f["kind"] == "memory_leak"]
    assert not [f for f in clean["findings"] if f["kind"] == "missing_index"]

    compared = subprocess.run(
        [*CLI, "compare", str(all_out), str(none_out), "--format", "json"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert compared.returncode == 0, compared.stderr
    resolved = json.loads(compared.stdout)["resolved_findings"]
    still = [fault for fault, named in FAULTS.items() if not any(map(named, resolved))]
    assert not still, f"not listed as resolved: {still}"
