"""Leak verdicts on synthetic and recorded series; memray attribution on a real capture."""

from __future__ import annotations

import doctest
import json
import random
from pathlib import Path

import pytest

from diag import leaks
from diag.leaks import (
    leak_score,
    leak_verdicts,
    memray_suspects,
    suspect_findings,
    trend,
    verdict_findings,
)
from probes.memray import CaptureError, read_capture
from probes.process import ProcessSample

FIX = Path(__file__).parents[1] / "fixtures" / "profile"
ROOT = str(Path(__file__).resolve().parents[2])
MIB = 1 << 20


def series(values: list[float], *, fds: list[int] | None = None, step: float = 1.0,
           threads: list[int] | None = None) -> list[ProcessSample]:  # fmt: skip
    out = []
    for i, v in enumerate(values):
        out.append(
            ProcessSample(
                t=1000.0 + i * step,
                pid=1,
                label="svc (pid 1)",
                cpu_percent=10.0,
                rss=int(v),
                uss=int(v),
                pss=None,
                threads=threads[i] if threads else 8,
                fds=fds[i] if fds else 20,
                connections=3,
                read_bytes=0,
                write_bytes=0,
            )
        )
    return out


def recorded(name: str) -> list[ProcessSample]:
    rows = [json.loads(line) for line in (FIX / name).read_text().splitlines()]
    return [ProcessSample(**{k: v for k, v in r.items() if k != "type"}) for r in rows]


def by_metric(verdicts: list[leaks.LeakVerdict]) -> dict[str, leaks.LeakVerdict]:
    return {v.metric: v for v in verdicts}


def test_doctests() -> None:
    result = doctest.testmod(leaks)
    assert result.attempted > 0 and result.failed == 0


def test_median_slope_is_exact_without_holding_every_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bracketed median equals the median of every pairwise slope, on noise, steps
    (many ties), repeated times and a periodic series, and when the bracket misses."""
    rng = random.Random(7)
    xs = [float(i) for i in range(400)]
    cases = [
        (xs, [rng.gauss(0, 1e6) + 4096 * i for i in range(400)]),
        (xs, [float(i // 50) * MIB for i in range(400)]),
        ([float(i // 3) for i in range(400)], [rng.random() for _ in range(400)]),
        (xs, [float(i % 7) for i in range(400)]),
        (xs[:150], [rng.random() for _ in range(150)]),
    ]
    for x, y in cases:
        assert leaks._median_slope(x, y) == leaks._median_of_all(x, y)
    assert leaks._median_slope([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None
    assert leaks._median_of_all([], []) is None
    # a bracket that misses the median (a sample far off it) falls back to every slope
    x, y = cases[0]
    real_sample = random.Random.sample
    monkeypatch.setattr(random.Random, "sample", lambda self, pop, k: [0, len(pop) - 1])
    assert leaks._median_slope(x, y) == leaks._median_of_all(x, y)
    monkeypatch.setattr(random.Random, "sample", real_sample)


def test_steady_growth_is_a_leak_with_projection() -> None:
    rng = random.Random(1)
    values = [200 * MIB + i * 512 * 1024 + rng.gauss(0, 256 * 1024) for i in range(120)]
    v = by_metric(leak_verdicts(series(values), memory_limit=1024 * MIB))["uss"]
    assert v.status == "leak" and v.kind == "memory_leak"
    assert 0.4 * MIB < v.per_second < 0.6 * MIB
    assert v.seconds_to_limit is not None and 1000 < v.seconds_to_limit < 2000
    [finding] = verdict_findings([v])
    assert finding.score == 100.0  # under an hour to the limit
    assert "in about" in finding.score_explanation


def test_growth_against_requests_gives_per_1k_figure() -> None:
    values = [100 * MIB + i * 100 * 1024 for i in range(60)]
    requests = [(1000.0 + i, 50.0 * i) for i in range(60)]  # 50 req/s
    v = by_metric(leak_verdicts(series(values), requests=requests, memory_limit=None))["uss"]
    assert v.status == "leak"
    assert v.per_1k_requests is not None
    assert abs(v.per_1k_requests - 2048 * 1024) < 50 * 1024  # 100 KiB/s / 50 req/s * 1000
    assert v.seconds_to_limit is None


def test_cache_that_fills_then_plateaus_is_not_a_leak() -> None:
    values = [100 * MIB + min(i, 40) * MIB for i in range(120)]
    v = by_metric(leak_verdicts(series(values), warmup=0))["uss"]
    assert v.status == "filling", v.explanation
    assert verdict_findings([v]) == []


def test_noise_is_not_a_leak() -> None:
    rng = random.Random(7)
    values = [300 * MIB + rng.gauss(0, 2 * MIB) for _ in range(120)]
    assert by_metric(leak_verdicts(series(values)))["uss"].status == "no_leak"


def test_too_little_data_says_so() -> None:
    values = [100 * MIB + i * MIB for i in range(8)]
    for v in leak_verdicts(series(values)):
        assert v.status == "not_enough_data"
        assert "not enough data" in v.explanation


def test_fd_and_thread_leaks() -> None:
    flat = [100 * MIB] * 60
    fds = [20 + i for i in range(60)]
    threads = [8 + i // 2 for i in range(60)]
    got = by_metric(leak_verdicts(series(flat, fds=fds, threads=threads), fd_limit=1024))
    assert got["fds"].status == "leak" and got["fds"].kind == "fd_leak"
    assert got["threads"].status == "leak" and got["threads"].kind == "thread_leak"
    assert got["uss"].status == "no_leak"
    kinds = {f.kind for f in verdict_findings(list(got.values()))}
    assert kinds == {"fd_leak", "thread_leak"}


def test_rss_growth_over_a_flat_heap_is_fragmentation() -> None:
    values = [100 * MIB + i * MIB for i in range(60)]
    heap = [(1000.0 + i, 50.0 * MIB) for i in range(60)]
    v = by_metric(leak_verdicts(series(values), heap=heap))["uss"]
    assert v.status == "leak" and v.kind == "fragmentation"
    heap_growing = [(1000.0 + i, 50.0 * MIB + i * MIB) for i in range(60)]
    v2 = by_metric(leak_verdicts(series(values), heap=heap_growing))["uss"]
    assert v2.kind == "memory_leak"


def test_recorded_series() -> None:
    leak = by_metric(leak_verdicts(recorded("series_leaky.jsonl"), memory_limit=8192 * MIB))
    assert leak["uss"].status == "leak"
    steady = by_metric(leak_verdicts(recorded("series_cpu_burn.jsonl")))
    assert steady["uss"].status != "leak"
    fd = by_metric(leak_verdicts(recorded("series_fd_leak.jsonl"), fd_limit=1024))
    assert fd["fds"].status == "leak"


def test_trend_requires_every_subwindow_to_grow() -> None:
    xs = [float(i) for i in range(90)]
    ys = [0.0] * 30 + [float(i) * 1000 for i in range(60)]  # flat start, then growth
    assert trend(xs, ys, min_growth=10).status == "flat"


def test_leak_score_is_monotonic() -> None:
    hours = [0.5, 2, 10, 48, 100, 200]
    scores = [leak_score(h * 3600) for h in hours]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == 100 and scores[-1] == 0


def test_memray_capture_ranks_the_leak_first_and_not_the_cache() -> None:
    cap = read_capture(FIX / "leaky.memray.bin")
    assert len(cap.times) > 50 and cap.locations
    suspects = memray_suspects(cap)
    assert suspects[0].status == "leak"
    assert suspects[0].location.startswith("remember_request")
    cache = next(s for s in suspects if s.location.startswith("cache_result"))
    assert cache.status != "leak"
    found = suspect_findings(suspects, "leaky (pid 1)", current_rss=40 * MIB,
                             memory_limit=1024 * MIB)  # fmt: skip
    assert [f.location.code.split(" ")[0] for f in found if f.location.code] == ["remember_request"]
    assert found[0].kind == "memory_leak" and found[0].source == "memray"


def test_garbage_capture_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a memray capture" * 10)
    with pytest.raises(CaptureError, match="cannot read memray capture"):
        read_capture(bad)
    truncated = tmp_path / "trunc.bin"
    truncated.write_bytes((FIX / "leaky.memray.bin").read_bytes()[:100])
    with pytest.raises(CaptureError):
        read_capture(truncated)


def test_recorded_stand_in_window_stepwise_leak_is_a_leak() -> None:
    """A real 6 s window on the stand-in: the chat store grows in ~60 KB steps (17
    retained messages), so a 2 s stretch holds only a few steps; the request path's
    transient buffers rise and fall. Only the chat store is a leak."""
    from probes.memray import LocationSeries, MemrayCapture

    doc = json.loads((FIX / "standin_chat_window.json").read_text())
    cap = MemrayCapture(
        pid=1,
        path="standin",
        times=tuple(doc["times"]),
        rss=tuple(doc["rss"]),
        heap=tuple(doc["heap"]),
        locations=tuple(
            LocationSeries(
                # recorded in a checkout at {ROOT}: the frames are this checkout's code
                tuple((f[0], f[1].replace("{ROOT}", ROOT), f[2]) for f in loc["stack"]),
                tuple(loc["live_bytes"]),
                loc["allocations"],
            )
            for loc in doc["locations"]
        ),
    )
    status = {s.location: s.status for s in memray_suspects(cap)}
    assert status["post_chat_message (diag/demo/server.py:617)"] == "leak", status
    assert status["fetch (diag/demo/server.py:197)"] != "leak", status  # rows in flight
    assert [k for k, v in status.items() if v == "leak"] == [
        "post_chat_message (diag/demo/server.py:617)"
    ], status
