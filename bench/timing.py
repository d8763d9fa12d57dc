"""Shared timing for the bench scripts: ours and the anchor, interleaved, median of a few rounds."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from time import perf_counter


def median_seconds(
    fns: dict[str, Callable[[], int]], reps: int = 3, *, clock: Callable[[], float] = perf_counter
) -> tuple[dict[str, float], dict[str, int]]:
    """One warm-up call of each, then ``reps`` rounds, interleaved so drift hits both alike.

    Each function returns a count (records, tokens) so the caller can check both did the same work.
    ``clock``: wall time by default; ``time.process_time`` (CPU time) where a shared machine's load
    would swing wall-clock ratios.
    """
    counts = {name: fn() for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}, counts
