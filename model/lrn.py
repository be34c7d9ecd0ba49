"""Local response normalisation (the paper's section 3.3), in the paper's convention or Caffe's, and fast.

    b[c] = a[c] / (k + alpha * sum over the n maps around c of a^2)^beta      paper: alpha = 1e-4 on the plain sum
                                                                              caffe: alpha / n (PyTorch, Caffe)

The sum runs over maps c - n//2 .. c + (n-1)//2 that exist, inside the map's own column when `groups` > 1.
PyTorch's LocalResponseNorm goes through a 3-D average pool on a padded copy; here the window sum is n - 1
in-place adds of shifted views (any memory layout stays as it is) and the backward pass is written out, so
nothing but the input and the denominator is kept for it. `python -m model.bench_lrn` compares the two.
"""
from __future__ import annotations

import torch
from torch import nn

CONVENTIONS = ("paper", "caffe")


def window_sum(sq: torch.Tensor, before: int, after: int, groups: int = 1) -> torch.Tensor:
    """out[c] = sum of sq over maps c - before .. c + after that exist in c's group.
    sq: [N, C, H, W] in any memory layout; returns a new tensor in the same layout."""
    out = sq.clone(memory_format=torch.preserve_format)
    # Splitting C into [G, C/G] is a view in both contiguous and channels_last layouts.
    s, o = sq.unflatten(1, (groups, -1)), out.unflatten(1, (groups, -1))
    for d in range(1, before + 1):
        o[:, :, d:] += s[:, :, :-d]
    for d in range(1, after + 1):
        o[:, :, :-d] += s[:, :, d:]
    return out


def _denominator(x: torch.Tensor, size: int, scale: float, k: float, groups: int) -> torch.Tensor:
    # PyTorch's window: size // 2 maps before c, (size - 1) // 2 after.
    return window_sum(x * x, size // 2, (size - 1) // 2, groups).mul_(scale).add_(k)


class _LRNFunction(torch.autograd.Function):
    """y = x d^-beta with d = k + s W(x^2); dx = g d^-beta - 2 beta s x W^T(g x d^-beta / d). Keeps x and d."""

    @staticmethod
    def forward(ctx, x, size: int, scale: float, beta: float, k: float, groups: int):
        d = _denominator(x, size, scale, k, groups)
        ctx.save_for_backward(x, d)
        ctx.args = (size, scale, beta, groups)
        return d.pow(-beta).mul_(x)

    @staticmethod
    def backward(ctx, g):
        x, d = ctx.saved_tensors
        size, scale, beta, groups = ctx.args
        gp = g * d.pow(-beta)
        # The window's transpose: it looks (size - 1) // 2 maps back and size // 2 ahead.
        inner = window_sum(gp * x / d, (size - 1) // 2, size // 2, groups)
        dx = gp.sub_(inner.mul_(x), alpha=2 * beta * scale)
        return dx, None, None, None, None, None


def local_response_norm(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
                        *, convention: str = "paper", groups: int = 1) -> torch.Tensor:
    """The functional form; see the module docstring for the formula."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown LRN convention {convention!r}; use one of {CONVENTIONS}")
    if x.dim() != 4 or x.shape[1] % groups:
        raise ValueError(f"LRN wants [N, C, H, W] with C divisible by groups={groups}, got {tuple(x.shape)}")
    scale = alpha if convention == "paper" else alpha / size
    if torch.is_grad_enabled() and x.requires_grad and not torch.compiler.is_compiling():
        return _LRNFunction.apply(x, size, scale, beta, k, groups)
    # Inference, export and compile: plain ops that any tracer understands.
    return x * _denominator(x, size, scale, k, groups).pow(-beta)


class LRN(nn.Module):
    """Local response normalisation across channels; `groups` keeps each window inside its column."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0, *,
                 convention: str = "paper", groups: int = 1):
        super().__init__()
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown LRN convention {convention!r}; use one of {CONVENTIONS}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.convention, self.groups = convention, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k,
                                   convention=self.convention, groups=self.groups)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, " \
               f"convention={self.convention}, groups={self.groups}"
