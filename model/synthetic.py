"""The model alone on random tensors: the images/s a perfect loader would allow (common.timing: warm-up steps,
synchronize before reading the clock). `python -m model.train --synthetic` runs only this;
`--measure-synthetic N` runs it before training and reports the real run as a fraction of it."""
from __future__ import annotations

import copy

import torch

from common.timing import Clock
from model.config import Config
from model.distributed import Dist
from model.optim import make_optimizer, train_step


def measure_model(cfg: Config, model: torch.nn.Module, dist: Dist, batch: int, classes: int, steps: int,
                  autocast) -> float:
    """images/s (all ranks) of `steps` training steps of batch `batch` per rank, on copies of the model and
    optimizer so that training is untouched."""
    model = copy.deepcopy(model)
    opt = make_optimizer(cfg.update, model, cfg.lr, cfg.momentum, cfg.weight_decay)
    fmt = torch.channels_last if dist.device.type == "cuda" and cfg.channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, 224, 224, device=dist.device).contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (batch,), device=dist.device)
    clock = Clock(steps, warmup=min(5, steps), sync=dist.synchronize)
    for _ in clock:
        train_step(model, opt, x, y, autocast)
    seconds = dist.all_sum([clock.result.seconds])[0] / dist.world_size
    return steps * batch * dist.world_size / seconds
