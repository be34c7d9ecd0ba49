"""Loader throughput: how fast can the shards feed a GPU (or this CPU)?

    python tools/bench_loader.py --shards shards/                   # both backends + decode-only ceiling
    python tools/bench_loader.py --shards shards/ --device cuda --batch-size 256 --batches 300
    python tools/bench_loader.py --shards shards/ --backends dali --seconds 60 --json bench.json
    python -m pipeline.bench ...                                    # the same command, by its older name

Each backend runs the full train augmentation (random 224 window, flip, PCA lighting, normalization) into
float32 NCHW batches on --device, with --workers threads (DALI) or processes (reference). Warm-up batches are
not counted; on CUDA the clock stops after a synchronize. Rounds interleave the contenders; the best counts.
The decode-only ceiling decodes the same JPEGs with no augmentation, on the same number of cores: with
--device cpu, OpenCV and Pillow (worker processes) and DALI's CPU decoder; with --device cuda, DALI's mixed
(nvJPEG) decoder only. The fastest is the ceiling. Memory: resident set of this process and its workers,
sampled after every epoch. A thin command over measure.loader_speed.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import click
import torch

from common import cli
from common.device import default_device
from common.files import write_json
from common.parallel import available_cores, default_workers
from common.timing import best_of
from measure.loader_speed import bench_loader, decode_dali, decode_pillow, decode_rate
from pipeline import BACKENDS, DEVICES, open_dataset
from shardkit.stats import decode_chunk


def contenders(shards: Path, names: list[str], device: str, batch_size: int, workers: int, batches: int,
               seconds: float | None, warmup: int, ceiling: bool) -> list:
    """What to time, each a function that returns a result row {"backend", "images_per_s", ...}."""
    tars = open_dataset(shards).split("train").tars
    out = [partial(bench_loader, shards, b, device, batch_size, workers, batches, seconds, warmup) for b in names]
    if not ceiling:
        return out
    if device == "cpu":
        for name, fn in (("decode-only opencv", decode_chunk), ("decode-only pillow", decode_pillow)):
            out.append(partial(decode_row, name, decode_rate, tars, fn, workers))
    try:
        import nvidia.dali  # noqa: F401  (only the DALI row needs it)
        name = "decode-only dali" + (" (mixed)" if device == "cuda" else "")
        out.append(partial(decode_row, name, decode_dali, tars, device, batch_size, workers, batches))
    except ImportError:
        pass
    return out


def decode_row(name: str, rate, *args) -> dict:
    return {"backend": name, "images_per_s": rate(*args).per_s}


@click.command(context_settings=cli.CONTEXT)
@click.option("--shards", default="shards", show_default=True, type=click.Path(path_type=Path))
@click.option("--backends", default=",".join(BACKENDS), show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default=default_device(), show_default="cuda if available")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1))
@click.option("--workers", type=click.IntRange(1), help="Threads (DALI) / processes (reference) [default: all cores].")
@click.option("--batches", default=40, show_default=True, type=click.IntRange(1), help="Timed batches per backend.")
@click.option("--seconds", type=float, help="Or: time each backend for this long.")
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(1))
@click.option("--ceiling/--no-ceiling", default=True, show_default=True, help="Also measure decode-only rates.")
@click.option("--repeat", default=2, show_default=True, type=click.IntRange(1), help="Rounds; the best counts.")
@click.option("--json", "json_path", type=click.Path(path_type=Path))
def main(shards, backends, device, batch_size, workers, batches, seconds, warmup, ceiling, repeat, json_path):
    """Images/s of each loader backend and of plain decoding, on the same cores."""
    workers = workers or default_workers()
    spec = open_dataset(shards).split("train")
    if spec.samples < batch_size:
        raise click.UsageError(f"{spec.samples} train samples: fewer than one batch of {batch_size}")
    click.echo(f"bench: {spec.samples} train images in {len(spec.tars)} shards, batch {batch_size}, "
               f"{workers} workers, device {device}")
    names = [b.strip() for b in backends.split(",") if b.strip()]
    runs = contenders(shards, names, device, batch_size, workers, batches, seconds, warmup, ceiling)
    results = best_of(runs, repeat, rate=lambda r: r["images_per_s"])
    print_table(results)
    report = {"device": device, "workers": workers, "batch_size": batch_size, "repeat": repeat, "results": results,
              "cpu": available_cores(), "gpu": torch.cuda.get_device_name() if device == "cuda" else None}
    if json_path:
        write_json(json_path, report)
    click.echo(f"bench: {len(results)} contenders, best of {repeat} rounds, batch {batch_size}, {workers} workers")


def print_table(results: list[dict]) -> None:
    """Memory lines, then the images/s table with the ratios to the reference loader and to the ceiling."""
    for r in results:
        if "rss_mb_peak" in r:
            click.echo(f"  {r['backend']}: RSS after the first epoch {r['rss_mb_first_epoch']:.0f} MB, "
                       f"after {r['epochs']} epochs {r['rss_mb_last']:.0f} MB (peak {r['rss_mb_peak']:.0f} MB)")
    by = {r["backend"]: r["images_per_s"] for r in results}
    top = max((v for k, v in by.items() if k.startswith("decode-only")), default=None)
    click.echo("\n| backend | images/s | vs reference (torch) | vs decode-only ceiling |\n|---|---|---|---|")
    for r in results:
        r["vs_torch"] = r["images_per_s"] / by["torch"] if "torch" in by else None
        r["vs_ceiling"] = r["images_per_s"] / top if top else None
        fmt = lambda v: f"{v:.2f}x" if v else "-"  # noqa: E731
        click.echo(f"| {r['backend']} | {r['images_per_s']:.0f} | {fmt(r['vs_torch'])} | {fmt(r['vs_ceiling'])} |")


if __name__ == "__main__":
    cli.run(main)
