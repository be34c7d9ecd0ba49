"""Benchmark: this project's LRN (model/lrn.py) against torch.nn.LocalResponseNorm, on AlexNet's two LRN inputs.

    python -m model.bench_lrn                        # CPU, batch 32, contiguous and channels_last
    python -m model.bench_lrn --device cuda --batch-size 256 --json lrn.json

Both compute Caffe's convention here (PyTorch's only one), so outputs are compared as well as timed. Times are
medians over --repeats runs after a warm-up, with the device synchronised; forward and forward + backward.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import click
import torch
from torch import nn

from model.lrn import LRN

SHAPES = {"conv1": (96, 55, 55), "conv2": (256, 27, 27)}   # AlexNet's LRN inputs, per image


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn, device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median seconds of fn() over `repeats` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(device: torch.device, batch: int, repeats: int, dtype: torch.dtype = torch.float32) -> list[dict]:
    rows = []
    ours = LRN(5, alpha=1e-4 * 5, beta=0.75, k=2.0, convention="caffe")   # = alpha 1e-4 on the plain sum
    theirs = nn.LocalResponseNorm(5, alpha=1e-4 * 5, beta=0.75, k=2.0)
    for layer, (c, h, w) in SHAPES.items():
        for layout in ("contiguous", "channels_last"):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            # Post-ReLU activations of AlexNet's size: non-negative, a few units.
            x = (torch.randn(batch, c, h, w, device=device, dtype=dtype).relu() * 4).contiguous(memory_format=fmt)
            g = torch.randn_like(x)
            err = (ours(x).float() - theirs(x).float()).abs().max().item()
            row = {"layer": layer, "layout": layout, "batch": batch, "max_abs_diff": err}
            for name, m in (("torch", theirs), ("ours", ours)):
                with torch.no_grad():
                    row[f"{name}_fwd_ms"] = 1e3 * time_it(lambda: m(x), device, repeats)
                xg = x.detach().requires_grad_()
                row[f"{name}_fwd_bwd_ms"] = 1e3 * time_it(lambda: m(xg).backward(g), device, repeats)
            row["speedup_fwd"] = row["torch_fwd_ms"] / row["ours_fwd_ms"]
            row["speedup_fwd_bwd"] = row["torch_fwd_bwd_ms"] / row["ours_fwd_bwd_ms"]
            rows.append(row)
    return rows


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(1))
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the rows here.")
def main(device, batch_size, repeats, json_path):
    """Time this project's LRN against PyTorch's."""
    if device == "cuda" and not torch.cuda.is_available():
        raise click.UsageError("--device cuda, but torch sees no CUDA device")
    dev = torch.device(device)
    rows = bench(dev, batch_size, repeats)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    click.echo(f"LRN, batch {batch_size}, {name}, median of {repeats} (ms)")
    click.echo(f"{'layer':6} {'layout':13} {'torch fwd':>9} {'ours fwd':>9} {'x':>5} "
               f"{'torch f+b':>9} {'ours f+b':>9} {'x':>5} {'max diff':>9}")
    for r in rows:
        click.echo(f"{r['layer']:6} {r['layout']:13} {r['torch_fwd_ms']:9.2f} {r['ours_fwd_ms']:9.2f} "
                   f"{r['speedup_fwd']:5.2f} {r['torch_fwd_bwd_ms']:9.2f} {r['ours_fwd_bwd_ms']:9.2f} "
                   f"{r['speedup_fwd_bwd']:5.2f} {r['max_abs_diff']:9.2e}")
    if json_path:
        tmp = json_path.with_name(f".{json_path.name}.partial")
        tmp.write_text(json.dumps({"device": name, "rows": rows}, indent=1) + "\n")
        tmp.replace(json_path)
    click.echo(f"summary: ours/torch speed-up fwd {min(r['speedup_fwd'] for r in rows):.2f}.."
               f"{max(r['speedup_fwd'] for r in rows):.2f}x, fwd+bwd {min(r['speedup_fwd_bwd'] for r in rows):.2f}.."
               f"{max(r['speedup_fwd_bwd'] for r in rows):.2f}x")


if __name__ == "__main__":
    main()
