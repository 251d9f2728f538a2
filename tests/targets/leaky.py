"""A planted leak next to a cache that fills and then stops growing.

``leak_sink`` grows forever (one 10 KiB string per tick); ``bounded_cache`` fills up to
``CACHE_LIMIT`` entries quickly, then only replaces entries (a cache, not a leak).
"""

from __future__ import annotations

import sys
import time

leak_sink: list[str] = []
bounded_cache: dict[int, str] = {}
CACHE_LIMIT = 100  # fills in ~0.5 s (a few s on a loaded machine), then plateaus


def remember_request(i: int) -> None:
    leak_sink.append("x" * 10_000 + str(i))


def cache_result(i: int) -> None:
    key = i % CACHE_LIMIT
    bounded_cache[key] = "c" * 10_000 + str(i)


def main() -> None:
    print("ready", flush=True)
    deadline = time.monotonic() + float(sys.argv[1]) if len(sys.argv) > 1 else None
    i = 0
    while deadline is None or time.monotonic() < deadline:
        remember_request(i)
        cache_result(i)
        i += 1
        time.sleep(0.005)


if __name__ == "__main__":
    main()
