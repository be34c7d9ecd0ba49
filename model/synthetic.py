"""The model alone on random tensors: the images/s a perfect loader would allow (cifar10-airbench's timing:
warm-up steps, synchronize before reading the clock). `python -m model.train --synthetic` runs only this;
`--measure-synthetic N` runs it before training and reports the real run as a fraction of it."""
from __future__ import annotations

import copy
import time

import torch

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
    warmup = min(5, steps)
    for i in range(steps + warmup):
        if i == warmup:
            dist.synchronize()
            t0 = time.perf_counter()
        train_step(model, opt, x, y, autocast)
    dist.synchronize()
    dt = dist.all_sum([time.perf_counter() - t0])[0] / dist.world_size
    return steps * batch * dist.world_size / dt
