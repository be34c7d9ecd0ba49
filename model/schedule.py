"""Learning-rate schedules as pure functions of the epoch and the validation history (easy to test).

paper:  "divide the learning rate by 10 when the validation error rate stopped improving", three times.
step:   divide by 10 at fixed epochs (e.g. 30, 60, 80 of 90).
"""
from __future__ import annotations


def plateau_drops(val_errors: list[float], patience: int, max_drops: int = 3, min_delta: float = 1e-4) -> int:
    """How many times the rate has been divided so far, given the val error after each finished epoch.

    A drop happens once `patience` epochs in a row fail to beat the best error since the last drop by
    `min_delta`; counting restarts after each drop.
    """
    drops, best, stale = 0, float("inf"), 0
    for err in val_errors:
        if drops >= max_drops:
            break
        if err < best - min_delta:
            best, stale = err, 0
        else:
            stale += 1
            if stale >= patience:
                drops, best, stale = drops + 1, float("inf"), 0
    return drops


def learning_rate(base_lr: float, epoch: int, *, schedule: str, milestones: tuple[int, ...] = (),
                  val_errors: list[float] = (), patience: int = 5, gamma: float = 0.1, max_drops: int = 3) -> float:
    """The rate for `epoch` (0-based); val_errors holds the error after each epoch before it."""
    if schedule == "step":
        drops = sum(epoch >= m for m in milestones)
    elif schedule == "plateau":
        drops = plateau_drops(list(val_errors)[:epoch], patience, max_drops)
    elif schedule == "constant":
        drops = 0
    else:
        raise ValueError(f"unknown schedule {schedule!r}; use plateau, step or constant")
    return base_lr * gamma ** drops
