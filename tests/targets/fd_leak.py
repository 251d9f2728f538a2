"""Opens a file every tick and never closes it (an fd leak)."""

from __future__ import annotations

import sys
import time

kept = []


def open_and_forget() -> None:
    kept.append(open("/dev/null"))  # noqa: SIM115 - the leak is the point


def main() -> None:
    print("ready", flush=True)
    deadline = time.monotonic() + float(sys.argv[1]) if len(sys.argv) > 1 else None
    while deadline is None or time.monotonic() < deadline:
        open_and_forget()
        time.sleep(0.05)


if __name__ == "__main__":
    main()
