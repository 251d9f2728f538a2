"""scalene JSON (recorded from real runs, trimmed) into records and findings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diag.hotspots import scalene_findings
from diag.leaks import scalene_leak_findings
from probes.errors import PrerequisiteError, UsageError
from probes.scalene import parse_profile, read_profile, scalene_argv

FIX = Path(__file__).parents[1] / "fixtures" / "profile"


def test_parse_real_profile() -> None:
    prof = read_profile(FIX / "scalene_leaky.json")
    assert prof.elapsed > 0
    by_line = {ln.lineno: ln for ln in prof.lines}
    assert by_line[18].malloc_mb > 1  # leak_sink.append(...) allocates
    assert "leak_sink.append" in by_line[18].text


def test_cpu_findings_skip_pure_waiting_lines() -> None:
    prof = read_profile(FIX / "scalene_cpu_burn.json")
    found = scalene_findings(prof, "scalene:cpu_burn.py")
    assert found and all(f.kind == "cpu_hotspot" and f.source == "scalene" for f in found)
    codes = [f.location.code or "" for f in found]
    assert any("total += i * i % 7" in c for c in codes)
    assert not any("time.sleep" in c for c in codes)
    assert found[0].score >= found[-1].score


def test_leak_likelihoods_become_findings() -> None:
    # synthetic leak entry on top of a real profile: short runs rarely reach scalene's
    # leak threshold, the parser and scoring are what is tested here
    data = json.loads((FIX / "scalene_leaky.json").read_text())
    fname = next(iter(data["files"]))
    data["files"][fname]["leaks"] = {"18": {"likelihood": 0.99, "velocity_mb_s": 2.0}}
    prof = parse_profile(data)
    [leak] = prof.leaks
    assert leak.lineno == 18 and "leak_sink" in leak.text
    [finding] = scalene_leak_findings(prof, "leaky", memory_limit=4 * 1024**3)
    assert finding.kind == "memory_leak" and finding.score == 100.0
    assert scalene_leak_findings(prof, "leaky", memory_limit=None)[0].score == 0.0


def test_bad_profiles(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(PrerequisiteError, match="cannot read scalene profile"):
        read_profile(bad)
    bad.write_text('{"other": 1}')
    with pytest.raises(PrerequisiteError):
        read_profile(bad)
    bad.write_text("{}")  # what scalene writes when it was stopped before any sample
    with pytest.raises(PrerequisiteError, match="no samples"):
        read_profile(bad)


def test_argv_uses_the_script_and_separator(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text("print(1)\n")
    argv = scalene_argv(f"scalene:python {script} --flag 1", tmp_path / "o.json")
    assert argv[1:4] == ["-m", "scalene", "run"]
    assert argv[-4:] == [str(script), "---", "--flag", "1"]
    with pytest.raises(UsageError, match="needs a Python script"):
        scalene_argv("scalene:ls -l", tmp_path / "o.json")
