"""Honest timing for the benchmarks: contenders run in interleaved rounds, so a noisy moment on a shared
machine hits all of them, and each contender's best round counts."""
from __future__ import annotations

import time
from typing import Callable


def best_times(contenders: list[Callable[[], object]], rounds: int) -> list[float]:
    best = [float("inf")] * len(contenders)
    for _ in range(rounds):
        for i, fn in enumerate(contenders):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best
