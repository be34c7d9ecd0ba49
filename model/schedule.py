"""Learning-rate schedules as pure functions of the epoch and the validation history (easy to test).

paper:  "divide the learning rate by 10 when the validation error rate stopped improving", three times.
step:   divide by 10 at fixed epochs (e.g. 30, 60, 80 of 90).

The large-batch recipe (Goyal et al. 2017, "Accurate, Large Minibatch SGD", sections 2.1-2.2) sits on top:
linear scaling: the rate grows with the global batch from 0.01 at the paper's 128 (`scaled_lr`);
gradual warm-up: over the first epochs the rate rises step by step from the unscaled rate to the scaled
one (`warmup_lr`), then the chosen schedule runs on the scaled rate.
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


LR_SCALINGS = ("none", "linear")
REFERENCE_BATCH = 128  # the paper's batch, for which its 0.01 was chosen


def scaled_lr(lr: float, batch_size: int, scaling: str = "none", reference_batch: int = REFERENCE_BATCH) -> float:
    """The base rate for a global batch: `lr` as given (none), or lr * batch / reference_batch (linear)."""
    if scaling == "none":
        return lr
    if scaling == "linear":
        return lr * batch_size / reference_batch
    raise ValueError(f"unknown lr scaling {scaling!r}; use one of {LR_SCALINGS}")


def warmup_start(lr: float, target: float) -> float:
    """Where warm-up starts: Goyal's unscaled rate when scaling raised it, else zero (a plain ramp)."""
    return lr if target > lr else 0.0


def warmup_lr(target: float, step: int, warmup_steps: int, start: float = 0.0) -> float:
    """The rate at `step` (0-based, global): linear from `start` to `target`, reaching it on the last
    warm-up step (step warmup_steps - 1); `target` from then on."""
    if step >= warmup_steps - 1:
        return target
    return start + (target - start) * (step + 1) / warmup_steps
