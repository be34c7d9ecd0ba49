"""Benchmark: this project's LRN (model/lrn.py) against torch.nn.LocalResponseNorm, on AlexNet's two LRN inputs.

    python tools/bench_lrn.py                        # CPU, batch 32, contiguous and channels_last
    python tools/bench_lrn.py --device cuda --batch-size 256 --json lrn.json
    python -m model.bench_lrn ...                    # the same command, by its older name

Both compute Caffe's convention here (PyTorch's only one), so outputs are compared as well as timed. Times are
the best of --repeats interleaved rounds, each after a warm-up call, with the device synchronised; forward and
forward + backward. A thin command over measure.lrn.
"""
from __future__ import annotations

from pathlib import Path

import click
import torch

from common import cli
from common.files import write_json
from measure.lrn import bench


@click.command(context_settings=cli.CONTEXT)
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
    click.echo(f"LRN, batch {batch_size}, {name}, best of {repeats} (ms)")
    click.echo(f"{'layer':6} {'layout':13} {'torch fwd':>9} {'ours fwd':>9} {'x':>5} "
               f"{'torch f+b':>9} {'ours f+b':>9} {'x':>5} {'max diff':>9}")
    for r in rows:
        click.echo(f"{r['layer']:6} {r['layout']:13} {r['torch_fwd_ms']:9.2f} {r['ours_fwd_ms']:9.2f} "
                   f"{r['speedup_fwd']:5.2f} {r['torch_fwd_bwd_ms']:9.2f} {r['ours_fwd_bwd_ms']:9.2f} "
                   f"{r['speedup_fwd_bwd']:5.2f} {r['max_abs_diff']:9.2e}")
    if json_path:
        write_json(json_path, {"device": name, "rows": rows})
    click.echo(f"summary: ours/torch speed-up fwd {min(r['speedup_fwd'] for r in rows):.2f}.."
               f"{max(r['speedup_fwd'] for r in rows):.2f}x, fwd+bwd {min(r['speedup_fwd_bwd'] for r in rows):.2f}.."
               f"{max(r['speedup_fwd_bwd'] for r in rows):.2f}x")


if __name__ == "__main__":
    cli.run(main)
