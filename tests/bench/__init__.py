"""Benchmarks (``make bench``): each ``bench_*.py`` module has ``main() -> None`` that
prints its figures, measured side by side in one run. Speed and memory targets live here,
never in timed tests: the machine is shared and noisy."""
