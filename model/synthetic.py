"""The model alone on random tensors: the images/s a perfect loader would allow (common.timing: warm-up steps,
synchronize before reading the clock). `python -m model.train --synthetic` runs only this;
`--measure-synthetic N` runs it before training and reports the real run as a fraction of it. Like with like:
the copy it times is wrapped as the run's model is (DDP over the ranks, torch.compile with --compile)."""
from __future__ import annotations

import copy
from typing import Callable

import torch

from common.timing import Clock
from model.config import Config
from model.distributed import Dist
from model.optim import make_optimizer, train_step


def measure_model(cfg: Config, model: torch.nn.Module, dist: Dist, batch: int, classes: int, steps: int,
                  autocast, wrap: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m) -> tuple[float, dict]:
    """images/s (all ranks) of `steps` training steps of batch `batch` per rank, on copies of the model and
    optimizer so that training is untouched, and the wrapping timed ({"ddp": bool, "compiled": bool}).
    wrap(copy) is what the steps run (model.train.wrap: DDP, torch.compile, as the real run's). The random
    numbers it draws (its inputs, dropout) come from a forked generator state: the run after it, or a run
    resumed with its RNG restored, draws what it would have drawn without it."""
    cuda = [dist.device.index] if dist.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        return _measure(cfg, model, dist, batch, classes, steps, autocast, wrap)


def _measure(cfg: Config, model: torch.nn.Module, dist: Dist, batch: int, classes: int, steps: int, autocast,
             wrap: Callable[[torch.nn.Module], torch.nn.Module]) -> tuple[float, dict]:
    model = copy.deepcopy(model)
    net = wrap(model)
    opt = make_optimizer(cfg.update, model, cfg.lr, cfg.momentum, cfg.weight_decay)
    fmt = torch.channels_last if dist.device.type == "cuda" and cfg.channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, 224, 224, device=dist.device).contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (batch,), device=dist.device)
    clock = Clock(steps, warmup=min(5, steps), sync=dist.synchronize)
    for _ in clock:
        train_step(net, opt, x, y, autocast)
    seconds = dist.all_sum([clock.result.seconds])[0] / dist.world_size
    return steps * batch * dist.world_size / seconds, wrapping(net)


def wrapping(net: torch.nn.Module) -> dict:
    """What wraps the plain model in `net`: torch.compile's OptimizedModule (`_orig_mod`), DDP (`module`)."""
    compiled = hasattr(net, "_orig_mod")
    inner = net._orig_mod if compiled else net
    return {"ddp": isinstance(inner, torch.nn.parallel.DistributedDataParallel), "compiled": compiled}
