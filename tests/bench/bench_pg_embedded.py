"""Embedded PostgreSQL: first start (initdb + extensions) against a restart of the same
cluster; the demo and the tests pay the first once per data dir and the second after."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from diag import pgembed


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="archon-diag-bench-pg-", dir="/tmp"))
    try:
        t0 = time.perf_counter()
        pgembed.up(base)
        cold = time.perf_counter() - t0
        pgembed.down(base)
        t0 = time.perf_counter()
        pgembed.up(base)
        warm = time.perf_counter() - t0
    finally:
        pgembed.down(base, purge=True)
    print(f"   pg up, new cluster:      {cold:6.2f} s")
    print(f"   pg up, existing cluster: {warm:6.2f} s")
    print(f"   ratio new/existing:      {cold / warm:6.1f}x")
