"""Pure parts of the Archon stand-in: fault parsing, the simulated LLM's retries and
backoff, vector decoding and scoring, the tool step, DSN and host helpers."""

from __future__ import annotations

import math
import random
import shutil
import socket
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest

from diag.demo import faults, stack
from diag.demo.agents import HOT_PROJECT_IDS, run_tool_step
from diag.demo.common import is_loopback
from diag.demo.llm import LLMConfig, LLMUnavailable, backoff_delay, complete
from diag.demo.seed import Sizes, with_dbname
from diag.demo.server import _decode_float4_arrays, compute_etag, python_cosine_similarity
from probes.errors import UsageError


def test_parse_faults_all_none_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(faults.ENV_VAR, raising=False)
    assert faults.parse_faults(None) == frozenset(faults.FAULTS)
    assert faults.parse_faults("all") == frozenset(faults.FAULTS)
    assert faults.parse_faults("none") == frozenset()
    assert faults.parse_faults(" n_plus_one , missing_index ") == {"n_plus_one", "missing_index"}
    assert faults.parse_faults(["etag_hotspot"]) == {"etag_hotspot"}
    monkeypatch.setenv(faults.ENV_VAR, "pool_starvation")
    assert faults.parse_faults(None) == {"pool_starvation"}
    assert faults.to_spec({"missing_index", "n_plus_one"}) == "n_plus_one,missing_index"
    assert faults.to_spec(()) == "none"


def test_unknown_fault_is_one_line_listing_the_valid_names() -> None:
    with pytest.raises(UsageError) as caught:
        faults.parse_faults("n_plus_one,slow_disk")
    message = str(caught.value)
    assert "\n" not in message and "slow_disk" in message
    assert all(name in message for name in faults.FAULTS)


def test_there_are_eight_faults_each_described() -> None:
    assert len(faults.FAULTS) == 8 and all(faults.FAULTS.values())


async def test_llm_without_429s_streams_tokens() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    result = await complete("Summarise this", 40, random.Random(1), LLMConfig(rate_429=0), sleep)
    assert result.retries == 0 and 20 <= result.tokens <= 40
    assert len(result.text.split()) == result.tokens + 1
    assert 0 <= result.ttft_s <= result.latency_s
    # time to first token plus batched per-token waits, all positive
    assert slept and all(s > 0 for s in slept)


async def test_llm_retries_429s_with_exponential_backoff_then_gives_up() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    config = LLMConfig(rate_429=1.0, max_retries=4, backoff_base_s=0.5, backoff_cap_s=3.0)
    with pytest.raises(LLMUnavailable, match="4 retries"):
        await complete("x", 10, random.Random(2), config, sleep)
    backoffs = slept[1::2]  # each attempt: a quick 429, then the backoff
    assert len(backoffs) == 4
    for attempt, delay in enumerate(backoffs):
        ceiling = min(3.0, 0.5 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling


async def test_llm_recovers_after_some_429s() -> None:
    async def sleep(_seconds: float) -> None:
        return None

    results = [
        await complete("x", 8, random.Random(seed), LLMConfig(rate_429=0.3), sleep)
        for seed in range(30)
    ]
    assert any(r.retries > 0 for r in results) and any(r.retries == 0 for r in results)


def test_backoff_is_capped_and_scaled() -> None:
    rng = random.Random(0)
    config = LLMConfig(backoff_base_s=1.0, backoff_cap_s=2.0, time_scale=0.1)
    assert all(0.1 <= backoff_delay(10, config, rng) <= 0.2 for _ in range(50))


def _array_send(values: list[float]) -> bytes:
    """PostgreSQL's binary real[] layout (what array_send returns), element type oid 700."""
    header = struct.pack(">iiiii", 1, 0, 700, len(values), 1)
    return header + b"".join(struct.pack(">if", 4, v) for v in values)


def test_decode_float4_arrays_matches_the_binary_layout() -> None:
    rows = [[0.5, -1.25, 3.0], [1.0, 2.0, -0.125]]
    decoded = _decode_float4_arrays([_array_send(r) for r in rows])
    assert decoded.dtype == np.float32 and decoded.tolist() == rows


def test_python_cosine_matches_numpy() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=64), rng.normal(size=64)
    expected = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert math.isclose(python_cosine_similarity(a.tolist(), b.tolist()), expected, rel_tol=1e-9)
    assert python_cosine_similarity([0.0, 0.0], [1.0, 2.0]) == 0.0


def test_compute_etag_is_stable_and_content_sensitive() -> None:
    payload = [{"id": 1, "b": [1, 2]}, {"id": 2}]
    assert compute_etag(payload) == compute_etag(list(payload))
    assert compute_etag(payload) != compute_etag([{"id": 1, "b": [1, 3]}, {"id": 2}])


def test_tool_step_is_deterministic_real_work() -> None:
    text = "the agent fixed the queue and the queue drained " * 20
    assert run_tool_step(text) == run_tool_step(text)
    top = dict(item.split(":") for item in run_tool_step(text).split(", "))
    assert len(top) == 5 and {"the", "queue"} <= set(top)


def test_hot_projects_are_the_seeded_first_projects() -> None:
    # PostgreSQL's md5('archon-project-1')::uuid, the newest project in the seed
    assert str(HOT_PROJECT_IDS[0]) == "70c288ce-3664-2bad-fe9e-e21e88e7f4bf"


def test_loopback_and_dsn_helpers() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    assert with_dbname("postgresql://u@127.0.0.1:5/postgres", "archon") == (
        "postgresql://u@127.0.0.1:5/archon"
    )
    assert "dbname=archon" in with_dbname("host=127.0.0.1 port=5 dbname=postgres", "archon")
    assert Sizes.small().tasks < Sizes().tasks and Sizes().tasks >= 200_000


def test_stack_refuses_a_busy_port_and_ignores_an_empty_dir() -> None:
    base = Path(tempfile.mkdtemp(prefix="archon-diag-unit-demo-"))
    assert stack.status(base) is None and stack.down(base) is False
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UsageError, match=f"port {port} .*--agents-port"):
            stack.up(base, faults="none", server_port=0, agents_port=port)
    with pytest.raises(UsageError, match="unknown fault"):
        stack.up(base, faults="everything")
    assert not (base / "pg").exists()
    shutil.rmtree(base, ignore_errors=True)
