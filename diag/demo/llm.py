"""A simulated LLM for the agents service: streaming latency and rate limits, no model.

Time to first token and per-token times are drawn from log-normal distributions (the
shape measured LLM APIs show: a long right tail), and a configurable share of calls is
answered with HTTP 429, which the caller retries with capped exponential backoff and
jitter. Everything is driven by a caller-supplied ``random.Random`` so a job's timings are
reproducible, and by an injectable ``sleep`` so unit tests run instantly.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Sleep = Callable[[float], Awaitable[None]]

_VOCABULARY = [
    "the",
    "task",
    "project",
    "source",
    "chunk",
    "agent",
    "query",
    "result",
    "should",
    "could",
    "update",
    "index",
    "plan",
    "retry",
    "error",
    "document",
    "feature",
    "summary",
    "answer",
    "context",
    "because",
    "therefore",
    "however",
    "next",
]


@dataclass(frozen=True)
class LLMConfig:
    ttft_median_s: float = 0.45
    ttft_sigma: float = 0.5
    token_median_s: float = 0.022
    token_sigma: float = 0.35
    rate_429: float = 0.05
    max_retries: int = 5
    backoff_base_s: float = 0.25
    backoff_cap_s: float = 4.0
    time_scale: float = 1.0  # multiplies every simulated delay (tests use < 1)


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: int
    ttft_s: float  # call start -> first token, including any 429 retries
    latency_s: float  # call start -> last token
    retries: int


class RateLimited(Exception):
    """One simulated HTTP 429 from the provider."""


class LLMUnavailable(Exception):
    """Still rate limited after every retry."""


def backoff_delay(attempt: int, config: LLMConfig, rng: random.Random) -> float:
    """Capped exponential backoff with "equal jitter": half fixed, half random."""
    ceiling = min(config.backoff_cap_s, config.backoff_base_s * float(2**attempt))
    return (ceiling / 2 + rng.random() * ceiling / 2) * config.time_scale


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return float(math.exp(rng.gauss(math.log(median), sigma)))


async def _request(
    prompt: str, max_tokens: int, config: LLMConfig, rng: random.Random, sleep: Sleep
) -> tuple[list[str], float | None]:
    """One provider request: raises RateLimited, or streams tokens and returns them with
    the monotonic time the first one arrived."""
    if rng.random() < config.rate_429:
        await sleep(0.02 * config.time_scale)  # a 429 comes back quickly
        raise RateLimited("429 Too Many Requests")
    await sleep(_lognormal(rng, config.ttft_median_s, config.ttft_sigma) * config.time_scale)
    first = time.monotonic()
    count = max(1, rng.randint(max(1, max_tokens // 2), max(1, max_tokens)))
    words = [rng.choice(_VOCABULARY) for _ in range(count)]
    pending = 0.0
    for _ in range(count - 1):
        pending += _lognormal(rng, config.token_median_s, config.token_sigma) * config.time_scale
        if pending >= 0.05:  # sleep in small batches, not once per token
            await sleep(pending)
            pending = 0.0
    if pending:
        await sleep(pending)
    return [prompt.split(" ", 1)[0], *words], first


async def complete(
    prompt: str,
    max_tokens: int,
    rng: random.Random,
    config: LLMConfig,
    sleep: Sleep = asyncio.sleep,
) -> Completion:
    """Call the simulated model, retrying 429s; raises LLMUnavailable when they persist."""
    started = time.monotonic()
    retries = 0
    while True:
        try:
            words, first = await _request(prompt, max_tokens, config, rng, sleep)
            break
        except RateLimited:
            if retries >= config.max_retries:
                raise LLMUnavailable(f"rate limited after {retries} retries") from None
            await sleep(backoff_delay(retries, config, rng))
            retries += 1
    ended = time.monotonic()
    return Completion(
        text=" ".join(words),
        tokens=len(words) - 1,
        ttft_s=(first or ended) - started,
        latency_s=ended - started,
        retries=retries,
    )
