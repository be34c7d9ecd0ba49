"""The paper's exact update rule (section 5), as an optimizer:

    v <- 0.9 v - 0.0005 lr w - lr grad
    w <- w + v

PyTorch's SGD keeps v without the learning rate (v <- 0.9 v + grad + wd w; w <- w - lr v), so right after a
learning-rate drop its step shrinks at once, while the paper's velocity still carries the old rate for a while.
`make_optimizer` picks one of the two (--update), `train_step` is one step of either.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


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


def make_optimizer(update: str, model: torch.nn.Module, lr: float, momentum: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    """update: "paper" (PaperSGD) or "pytorch" (torch.optim.SGD)."""
    if update == "paper":
        return PaperSGD(model.parameters(), lr, momentum, weight_decay)
    return torch.optim.SGD(model.parameters(), lr, momentum=momentum, weight_decay=weight_decay)


def train_step(model, opt, images, labels, autocast) -> torch.Tensor:
    """One cross-entropy step; the loss comes back on the device (no host sync)."""
    with autocast:
        loss = F.cross_entropy(model(images), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()
