"""This project's LRN (model/lrn.py) against torch.nn.LocalResponseNorm, on AlexNet's two LRN inputs: outputs
compared, forward and forward + backward timed (common.timing: warm-up, device synchronized, best of
interleaved rounds). Behind tools/bench_lrn.py.
"""
from __future__ import annotations

import torch
from torch import nn

from common.timing import best_of, synchronizer, time_calls
from model.lrn import LRN

SHAPES = {"conv1": (96, 55, 55), "conv2": (256, 27, 27)}   # AlexNet's LRN inputs, per image


def bench(device: torch.device, batch: int, repeats: int, dtype: torch.dtype = torch.float32) -> list[dict]:
    """One row per layer and memory layout: both modules' ms (forward; forward + backward), speed-ups, and
    their largest output difference. Both compute Caffe's convention here (PyTorch's only one)."""
    rows = []
    ours = LRN(5, alpha=1e-4 * 5, beta=0.75, k=2.0, convention="caffe")   # = alpha 1e-4 on the plain sum
    theirs = nn.LocalResponseNorm(5, alpha=1e-4 * 5, beta=0.75, k=2.0)
    sync = synchronizer(device)
    for layer, (c, h, w) in SHAPES.items():
        for layout in ("contiguous", "channels_last"):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            # Post-ReLU activations of AlexNet's size: non-negative, a few units.
            x = (torch.randn(batch, c, h, w, device=device, dtype=dtype).relu() * 4).contiguous(memory_format=fmt)
            g = torch.randn_like(x)
            xg = x.detach().requires_grad_()
            err = (ours(x).float() - theirs(x).float()).abs().max().item()
            calls = {f"{name}_{what}_ms": fn for name, m in (("torch", theirs), ("ours", ours))
                     for what, fn in (("fwd", _forward(m, x)), ("fwd_bwd", lambda m=m: m(xg).backward(g)))}
            best = best_of([lambda fn=fn: time_calls(fn, warmup=1, sync=sync) for fn in calls.values()], repeats)
            row = {"layer": layer, "layout": layout, "batch": batch, "max_abs_diff": err}
            row.update({name: 1e3 * t.seconds for name, t in zip(calls, best)})
            row["speedup_fwd"] = row["torch_fwd_ms"] / row["ours_fwd_ms"]
            row["speedup_fwd_bwd"] = row["torch_fwd_bwd_ms"] / row["ours_fwd_bwd_ms"]
            rows.append(row)
    return rows


def _forward(module, x):
    def run():
        with torch.no_grad():
            module(x)
    return run
