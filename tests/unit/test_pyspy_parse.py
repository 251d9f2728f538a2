"""Parsing py-spy's raw collapsed output (recorded from real runs in tests/fixtures/profile)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from diag.commands import profile as profile_cmd
from diag.config import add_run_options, from_args
from probes.pyspy import (
    PySpyRecorder,
    _Shared,
    explain_failure,
    parse_collapsed,
    read_collapsed,
)

FIX = Path(__file__).parents[1] / "fixtures" / "profile"


def test_real_recording_parses_completely() -> None:
    stacks = read_collapsed(FIX / "asgi.cpu.txt")
    assert stacks.bad_lines == 0
    assert stacks.total == 316  # py-spy reported "Samples: 316" for this window
    leaf_funcs = {stack[-1][0] for stack in stacks.stacks}
    assert "JSONEncoder.iterencode" in leaf_funcs
    # frames are recorded with full filenames and line numbers
    some = next(iter(stacks.stacks))
    assert some[0][1].startswith("<frozen") or some[0][1].startswith("/")


def test_garbage_and_truncated_lines_are_counted_not_fatal() -> None:
    lines = [
        "main (/app/x.py:3);work (/app/x.py:9) 7",
        "main (/app/x.py:3);work (/app/x.py:9) 5",
        "not a stack at all",
        "main (/app/x.py:3);wor",  # truncated mid-write
        "main (/app/x.py:3) abc",
        "",
        "thread (0x7f00);main (/app/x.py:3) 2",
    ]
    stacks = parse_collapsed(lines)
    assert stacks.bad_lines == 3
    assert stacks.total == 14
    assert stacks.stacks[(("main", "/app/x.py", 3), ("work", "/app/x.py", 9))] == 12


def test_frames_without_line_numbers() -> None:
    stacks = parse_collapsed(["<module> (app.py);f (app.py) 4"])
    assert stacks.stacks == {(("<module>", "app.py", 0), ("f", "app.py", 0)): 4}


def test_windows_share_frames_and_stacks_of_recent_use(monkeypatch: Any) -> None:
    """Two windows of the same process hold the same frame and stack objects, not copies.
    The shared tables keep only what the last two generations of parses used; windows
    parsed before keep what they hold."""
    import probes.pyspy as pyspy

    shared = _Shared(every=2)
    monkeypatch.setattr(pyspy, "_SHARED", shared)
    line = "main (/app/x.py:3);work (/app/x.py:9) 7"
    a = parse_collapsed([line])
    b = parse_collapsed([line, "main (/app/x.py:3);other (/app/x.py:12) 1"])
    (sa,) = a.stacks
    sb = next(s for s in b.stacks if s == sa)
    assert sb is sa and sb[0] is sa[0]
    # a new generation began with b: what a used came over from the old one
    c = parse_collapsed([line])
    assert next(iter(c.stacks)) is sa and sa in shared.stacks
    # two generations without "work": it is gone from the tables, intact in the windows
    for _ in range(4):
        parse_collapsed(["main (/app/x.py:3) 1"])
    assert sa not in shared.stacks and "work (/app/x.py:9)" not in shared.frames
    d = parse_collapsed([line])
    assert next(iter(d.stacks)) == sa and next(iter(d.stacks)) is not sa
    assert a.stacks == {sa: 7} and b.total == 8 and c.total == 7


def test_failure_messages_are_one_actionable_line() -> None:
    perm = explain_failure("Error: Permission denied (os error 13)", 42)
    assert "ptrace" in perm and "\n" not in perm
    assert "gone" in explain_failure("Error: No such process (os error 3)", 42)
    not_py = explain_failure("Error: Failed to find python version from target process", 42)
    assert "not look like a Python process" in not_py


def test_blocking_is_one_option_everywhere() -> None:
    """py-spy never pauses targets unless ``--blocking`` (on ``run``/``tui`` and on
    ``profile``) asks it to; the choice reaches py-spy's command line."""
    assert "--nonblocking" in PySpyRecorder(1, Path("x.txt")).argv()
    assert "--nonblocking" not in PySpyRecorder(1, Path("x.txt"), nonblocking=False).argv()
    run = argparse.ArgumentParser()
    add_run_options(run)
    host = ["--host", "http://127.0.0.1:9"]
    assert from_args(run.parse_args(host)).nonblocking is True
    assert from_args(run.parse_args([*host, "--blocking"])).nonblocking is False
    profile = argparse.ArgumentParser()
    profile_cmd.configure(profile)
    assert profile.parse_args([]).nonblocking is True
    assert profile.parse_args(["--blocking"]).nonblocking is False
