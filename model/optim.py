"""The paper's exact update rule (section 5), as an optimizer:

    v <- 0.9 v - 0.0005 lr w - lr grad
    w <- w + v

PyTorch's SGD keeps v without the learning rate (v <- 0.9 v + grad + wd w; w <- w - lr v), so right after a
learning-rate drop its step shrinks at once, while the paper's velocity still carries the old rate for a while.
"""
from __future__ import annotations

import torch


class PaperSGD(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p)
                v = state["velocity"]
                v.mul_(mom).add_(p, alpha=-wd * lr).add_(p.grad, alpha=-lr)
                p.add_(v)
        return loss
