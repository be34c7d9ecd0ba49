"""The one timing helper of the project (cifar10-airbench's honesty): warm-up steps off the clock, the device
synchronized before every clock read, and contenders run in interleaved rounds with each one's best round
counting, so that a noisy moment on a shared machine hits all of them alike.

    clock = Clock(steps=100, warmup=5, device=device)
    for _ in clock:                           # 5 untimed steps, then up to 100 timed ones
        x, y = clock.wait_for(batches)        # time blocked on the input, counted apart
        train_step(...)
        clock.count(len(x))
    clock.result.per_s, clock.result.wait_fraction, clock.result.gpu_wait_fraction

Two kinds of waiting for the input (docs/gpu.md): `wait` is host time blocked in next(batches); on CUDA,
`gpu_wait` is device time between a CUDA event recorded on the current stream just before next() and one just
after the batch is handed over (StreamWait): what the loader's work on that stream (copies, normalization)
and its ordering into it (DALI's outputs) held the training stream back, which host time cannot see.

    best = best_of([lambda: time_calls(convert_a), lambda: time_calls(convert_b)], rounds=3)

Every benchmark, every section of tools/gpu_check.py and `model.train --measure-synthetic` time through here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Timing:
    """What a timed stretch did: its seconds, steps, items (images, batches, ...) and time blocked on input."""
    seconds: float
    steps: int
    items: int = 0
    wait: float = 0.0
    gpu_wait: float | None = None  # CUDA only: the stream's time at the input hand-over (StreamWait)

    @property
    def per_s(self) -> float:
        """items per second (steps per second when no items were counted)."""
        return (self.items or self.steps) / self.seconds if self.seconds > 0 else 0.0

    @property
    def step_ms(self) -> float:
        return 1000 * self.seconds / self.steps if self.steps else 0.0

    @property
    def wait_fraction(self) -> float:
        return self.wait / self.seconds if self.seconds > 0 else 0.0

    @property
    def gpu_wait_fraction(self) -> float | None:
        if self.gpu_wait is None:
            return None
        return self.gpu_wait / self.seconds if self.seconds > 0 else 0.0


def no_sync() -> None:
    pass


def synchronizer(device) -> Callable[[], None]:
    """What to call before reading the clock so that queued GPU work is counted: cuda.synchronize on a CUDA
    device, nothing on the CPU."""
    if getattr(device, "type", device) != "cuda":
        return no_sync
    import torch

    return lambda: torch.cuda.synchronize(device)


class StreamWait:
    """Device time spent at the input hand-over, measured on the device: start() and stop() record CUDA events
    on the current stream around next(loader); take() (one host sync, so only where the caller syncs anyway)
    sums the gaps between them in seconds and starts again. On a CPU device every call is a no-op and take()
    gives None."""

    def __init__(self, device):
        self.cuda = getattr(device, "type", device) == "cuda"
        self._pairs: list = []
        self._open = None

    def _event(self):
        import torch
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start(self) -> None:
        if self.cuda:
            self._open = self._event()

    def stop(self) -> None:
        if self.cuda and self._open is not None:
            self._pairs.append((self._open, self._event()))
            self._open = None

    def take(self) -> float | None:
        if not self.cuda:
            return None
        if self._pairs:
            self._pairs[-1][1].synchronize()
        seconds = sum(a.elapsed_time(b) for a, b in self._pairs) / 1000
        self._pairs = []
        return seconds


class InputWait:
    """Time blocked on the input, both kinds: `next(source)` adds its host seconds to `host` and, on CUDA, the
    stream's time at the hand-over (StreamWait); take() returns (host, gpu) and starts again. The one place the
    training loop and Clock measure data-wait."""

    def __init__(self, device):
        self.host = 0.0
        self._gpu = StreamWait(device)

    def next(self, source: Iterator, *default):
        self._gpu.start()
        t0 = time.perf_counter()
        item = next(source, *default)
        self.host += time.perf_counter() - t0
        self._gpu.stop()
        return item

    def take(self) -> tuple[float, float | None]:
        host, self.host = self.host, 0.0
        return host, self._gpu.take()


class Clock:
    """Times the steps of a loop; iterate it and do one step per iteration (see the module docstring).

    `warmup` untimed steps come first; then up to `steps` timed ones, or fewer once `seconds` have passed.
    count() and wait_for() during the warm-up are not recorded. After the loop, `result` is a Timing.
    With `device`, the clock synchronizes it (unless `sync` is given) and, on CUDA, wait_for() also measures
    the input's device time (InputWait).
    """

    def __init__(self, steps: int, *, warmup: int = 0, seconds: float | None = None,
                 sync: Callable[[], None] | None = None, device=None):
        self.steps, self.warmup, self.seconds = steps, warmup, seconds
        self.sync = sync or (synchronizer(device) if device is not None else no_sync)
        self.result: Timing | None = None
        self._timing, self._items = False, 0
        self._input = InputWait(device if device is not None else "cpu")

    def __iter__(self) -> Iterator[int]:
        for i in range(self.warmup):
            yield i
        self.sync()
        self._timing, self._items = True, 0
        t0 = time.perf_counter()
        done = 0
        while done < self.steps:
            yield self.warmup + done
            done += 1
            if self.seconds is not None and time.perf_counter() - t0 >= self.seconds:
                break
        self.sync()
        seconds = time.perf_counter() - t0
        self.result = Timing(seconds, done, self._items, *self._input.take())
        self._timing = False

    def count(self, items: int) -> None:
        """Items (images, samples) the current step handled."""
        if self._timing:
            self._items += items

    def wait_for(self, source: Iterator):
        """next(source), its time counted as waiting for input (host time; on CUDA, device time too)."""
        return self._input.next(source) if self._timing else next(source)


def time_calls(fn: Callable[[], object], calls: int = 1, *, warmup: int = 0,
               sync: Callable[[], None] | None = None) -> Timing:
    """`calls` calls of fn() after `warmup` untimed ones."""
    clock = Clock(calls, warmup=warmup, sync=sync)
    for _ in clock:
        fn()
    return clock.result


def best_of(contenders: Sequence[Callable[[], T]], rounds: int, rate: Callable[[T], float] | None = None) -> list[T]:
    """Each contender's best result over `rounds` rounds that interleave them all: the highest rate(result),
    by default a Timing's items per second."""
    rate = rate or _rate
    best: list = [None] * len(contenders)
    for _ in range(rounds):
        for i, contender in enumerate(contenders):
            result = contender()
            if best[i] is None or rate(result) > rate(best[i]):
                best[i] = result
    return best


def _rate(t: Timing) -> float:
    return t.per_s if t.seconds > 0 else float("inf")


def endless(batches: Iterable, on_epoch: Callable[[], None] | None = None) -> Iterator:
    """Iterate a loader epoch after epoch (a timed stretch may span several); on_epoch() after each epoch."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("an epoch yielded no batches: nothing to time")
        if on_epoch is not None:
            on_epoch()
