"""Folding, per-function statistics, the wall-time breakdown and exports (pure functions)."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

from diag import hotspots
from diag.hotspots import (
    CATEGORIES,
    classify_stack,
    fold_stack,
    function_stats,
    hotspot_findings,
    to_collapsed,
    to_speedscope,
    wall_breakdown,
)
from probes.pyspy import CollapsedStacks, parse_collapsed, read_collapsed

FIX = Path(__file__).parents[1] / "fixtures" / "profile"
SITE = "/venv/lib/python3.11/site-packages"
STD = "/usr/lib/python3.11"


def test_doctests() -> None:
    result = doctest.testmod(hotspots)
    assert result.attempted > 0 and result.failed == 0


def test_planted_hotspot_ranks_first_with_interval() -> None:
    prof = function_stats(read_collapsed(FIX / "cpu_burn.cpu.txt"), seconds=5, rate=100)
    top = prof.stats[0]
    assert top.func == "planted_hotspot"
    lo, hi = top.self_ci
    assert lo <= top.self_share <= hi and hi - lo < 0.1
    assert top.self_share > 0.8


def test_framework_plumbing_is_folded_onto_the_app_frame() -> None:
    prof = function_stats(read_collapsed(FIX / "asgi.cpu.txt"), seconds=4, rate=100)
    assert prof.stats[0].func == "render_etag"
    # json's encoder is the callee, shown as evidence, not blamed for self time
    assert prof.stats[0].callees[0][0].startswith("JSONEncoder.iterencode")
    for st in prof.stats:
        info = hotspots.frame_info(st.file)
        if st.self_samples:
            assert info.module not in hotspots.FRAMEWORK, st.label
    # total time of uvicorn/asyncio frames is not reported either: they were dropped
    assert not any("uvicorn" in st.file for st in prof.stats)
    assert prof.plumbing_samples > 0  # loop-only samples were kept out of every function


def test_fold_goes_to_deepest_app_frame() -> None:
    stack = (
        ("run", f"{STD}/asyncio/runners.py", 1),
        ("handler", "/srv/app/routes.py", 10),
        ("helper", "/srv/app/util.py", 20),
        ("dumps", f"{STD}/json/__init__.py", 231),
        ("encode", f"{STD}/json/encoder.py", 200),
    )
    folded = fold_stack(stack)
    assert folded is not None
    assert folded.self_frame == ("helper", "/srv/app/util.py", 20)
    assert folded.callee == ("encode", f"{STD}/json/encoder.py", 200)
    assert ("run", f"{STD}/asyncio/runners.py") not in folded.functions
    assert fold_stack((("select", f"{STD}/selectors.py", 468),)) is None


def test_inline_comprehension_time_is_its_function_s_own() -> None:
    cosine = ("python_cosine_similarity", "/srv/app/server.py", 752)
    genexpr = ("python_cosine_similarity.<locals>.<genexpr>", "/srv/app/server.py", 752)
    folded = fold_stack((("rag_query", "/srv/app/server.py", 497), cosine, genexpr))
    assert folded is not None
    assert folded.self_frame == cosine and folded.callee is None
    assert ("python_cosine_similarity.<locals>.<genexpr>", "/srv/app/server.py") not in (
        folded.functions
    )
    # a generator expression consumed by some other function keeps its own frame
    other = fold_stack((("consume", "/srv/app/util.py", 5), genexpr))
    assert other is not None and other.self_frame == genexpr
    # a torn non-blocking sample that kept only the comprehension's frame (25 of 533
    # samples of the demo server in one 6 s window): still the function's own time
    torn = fold_stack((genexpr,))
    assert torn is not None and torn.self_frame == cosine
    assert torn.functions == (("python_cosine_similarity", "/srv/app/server.py"),)


def test_classify_stack_categories() -> None:
    app = ("handler", "/srv/app/routes.py", 10)
    loop = ("_run_once", f"{STD}/asyncio/base_events.py", 1900)
    db = (
        loop,
        app,
        ("execute", f"{SITE}/psycopg/cursor.py", 723),
        ("wait", f"{SITE}/psycopg/waiting.py", 1),
    )
    http = (loop, app, ("send", f"{SITE}/httpx/_client.py", 1), ("read", f"{STD}/ssl.py", 1))
    lock = (app, ("acquire", f"{STD}/threading.py", 1))
    idle = (loop, ("select", f"{STD}/selectors.py", 468))
    cpu = (loop, app)
    assert classify_stack(db) == "db"
    assert classify_stack(http) == "http"
    assert classify_stack(lock) == "lock_sleep"
    assert classify_stack(idle) == "idle"
    assert classify_stack(cpu) == "on_cpu"


def test_wall_breakdown_refined_by_cpu_recording() -> None:
    app_sleep = (("main", "/srv/app/job.py", 15),)  # time.sleep leaves no frame of its own
    app_work = (("main", "/srv/app/job.py", 13), ("work", "/srv/app/job.py", 5))
    wall = CollapsedStacks({app_sleep: 100, app_work: 100})
    cpu = CollapsedStacks({app_sleep: 2, app_work: 98})
    b = wall_breakdown(wall, cpu, wall_seconds=2, cpu_seconds=2)
    assert abs(sum(b.shares.values()) - 1) < 1e-9
    assert 0.49 < b.shares["on_cpu"] < 0.51
    assert 0.49 < b.shares["lock_sleep"] < 0.51
    unrefined = wall_breakdown(wall)
    assert unrefined.shares["on_cpu"] == 1.0 and not unrefined.refined


def test_wall_breakdown_on_real_asgi_recording() -> None:
    wall = read_collapsed(FIX / "asgi.wall.txt")
    cpu = read_collapsed(FIX / "asgi.cpu.txt")
    b = wall_breakdown(wall, cpu, 4, 4)
    assert set(b.shares) == set(CATEGORIES)
    assert abs(sum(b.shares.values()) - 1) < 1e-9
    assert b.shares["idle"] > 0.1  # the event loop waiting in select between requests
    assert b.top["on_cpu"][0][0].startswith("render_etag")
    json.dumps(b.to_json())


def test_findings_score_is_self_share_times_busy() -> None:
    prof = function_stats(read_collapsed(FIX / "cpu_burn.cpu.txt"), seconds=5, rate=100)
    found = hotspot_findings(prof, "burner (pid 1)")
    assert found[0].kind == "cpu_hotspot"
    busy = min(1.0, prof.samples / (5 * 100))
    assert found[0].score == round(100 * prof.stats[0].self_share * busy, 2)
    # the same profile from a process busy half as long scores half as much
    half = function_stats(read_collapsed(FIX / "cpu_burn.cpu.txt"), seconds=10, rate=100)
    assert hotspot_findings(half, "burner (pid 1)")[0].score < found[0].score
    assert "CPU samples" in found[0].score_explanation
    assert found[0].location.code and found[0].location.code.startswith("planted_hotspot")
    # a process on CPU 1 % of the time gets no hotspot findings
    idle = function_stats(parse_collapsed(["main (/a/x.py:1) 10"]), seconds=10, rate=100)
    assert hotspot_findings(idle, "idle") == []


def test_exports() -> None:
    stacks = read_collapsed(FIX / "cpu_burn.cpu.txt")
    speed = to_speedscope(stacks, "burner", rate=100)
    prof = speed["profiles"][0]
    assert len(prof["samples"]) == len(prof["weights"]) == len(stacks.stacks)
    assert abs(sum(prof["weights"]) - stacks.total / 100) < 1e-9
    nframes = len(speed["shared"]["frames"])
    assert all(0 <= i < nframes for s in prof["samples"] for i in s)
    text = to_collapsed(stacks, short=False)
    again = parse_collapsed(text.splitlines())
    assert again.total == stacks.total and again.bad_lines == 0
