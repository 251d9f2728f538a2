"""A CPU-bound loop: ``planted_hotspot`` takes most of the time, ``light_work`` a little."""

from __future__ import annotations

import sys
import threading
import time


def planted_hotspot(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def light_work(n: int) -> int:
    return sum(range(n))


def idle_thread() -> None:
    while True:
        time.sleep(0.5)


def main() -> None:
    threading.Thread(target=idle_thread, name="idler", daemon=True).start()
    print("ready", flush=True)
    deadline = time.monotonic() + float(sys.argv[1]) if len(sys.argv) > 1 else None
    while deadline is None or time.monotonic() < deadline:
        planted_hotspot(100_000)
        light_work(10_000)
        time.sleep(0.002)


if __name__ == "__main__":
    main()
