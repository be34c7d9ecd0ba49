"""Loader throughput: how fast can the shards feed a GPU (or this CPU)?

    python -m pipeline.bench --shards shards/                       # both backends + decode-only ceiling
    python -m pipeline.bench --shards shards/ --device cuda --batch-size 256 --batches 300
    python -m pipeline.bench --shards shards/ --backends dali --seconds 60 --json bench.json

Each backend runs the full train augmentation (random 224 window, flip, PCA lighting, normalization) into
float32 NCHW batches on --device, with --workers threads (DALI) or processes (reference). Warm-up batches are
not counted; on CUDA the clock stops after a synchronize. Rounds interleave the contenders; the best counts.
The decode-only ceiling decodes the same JPEGs with no augmentation, on the same number of cores: with
--device cpu, OpenCV and Pillow (worker processes) and DALI's CPU decoder; with --device cuda, DALI's mixed
(nvJPEG) decoder only. The fastest is the ceiling. Memory: resident set of this process and its workers,
sampled after every epoch.
"""
from __future__ import annotations

import io
import os
import time
from pathlib import Path

import click
import torch

from pipeline import BACKENDS, DEVICES, default_device, default_workers, make_loader
from pipeline.spec import read_spec
from shardkit import cli
from shardkit.files import write_json
from shardkit.format import index_path, read_samples
from shardkit.parallel import ordered_map
from shardkit.stats import decode_chunk, plan_chunks


def rss_mb() -> float:
    """Resident memory of this process and all its descendants (Linux /proc), in MB."""
    def children(pid: int) -> list[int]:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                return [int(c) for c in f.read().split()]
        except OSError:
            return []

    total, todo = 0, [os.getpid()]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
        todo += children(pid)
    return total / 1024


def bench_loader(shards: Path, backend: str, device: str, batch_size: int, workers: int, batches: int,
                 seconds: float | None, warmup: int) -> dict:
    loader = make_loader(shards, "train", batch_size, backend=backend, device=device, workers=workers)
    memory, n, t0, t_end = [rss_mb()], 0, None, None
    done = False
    while not done:
        for images, _ in loader:
            n += 1
            if n == warmup:
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            elif t0 is not None and (n - warmup >= batches or (seconds and time.perf_counter() - t0 >= seconds)):
                if device == "cuda":
                    torch.cuda.synchronize()
                t_end = time.perf_counter()
                done = True
                break
        memory.append(rss_mb())
    timed = n - warmup
    return {"backend": backend, "images_per_s": timed * batch_size / (t_end - t0), "batches": timed,
            "epochs": loader.epoch + (loader.batch > 0), "rss_mb_first_epoch": memory[1] if len(memory) > 1 else memory[0],
            "rss_mb_last": memory[-1], "rss_mb_peak": max(memory)}


def _decode_pillow(task) -> int:
    from PIL import Image
    for _, jpeg in read_samples(*task):
        Image.open(io.BytesIO(jpeg)).convert("RGB").load()
    return len(task[1])


def decode_pool(tasks, fn, workers: int) -> tuple[int, float]:
    list(ordered_map(fn, tasks[:1], 1))  # warm caches and imports
    t0 = time.perf_counter()
    n = sum(ordered_map(fn, tasks, workers, chunksize=1, ahead=2))
    return n, time.perf_counter() - t0


def decode_dali(tars, device: str, batch_size: int, workers: int, batches: int) -> tuple[int, float]:
    from nvidia.dali import fn, pipeline_def

    @pipeline_def(batch_size=batch_size, num_threads=workers, device_id=0 if device == "cuda" else None)
    def decode_only():
        jpegs, _ = fn.readers.webdataset(paths=[str(t) for t in tars], index_paths=[str(index_path(t)) for t in tars],
                                         ext=["jpg", "cls"])
        return fn.decoders.image(jpegs, device="mixed" if device == "cuda" else "cpu")

    pipe = decode_only()
    pipe.build()
    for _ in range(3):
        pipe.run()
    t0 = time.perf_counter()
    for _ in range(batches):
        out = pipe.run()
    if device == "cuda":
        out[0].as_cpu()
    return batches * batch_size, time.perf_counter() - t0


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
    spec = read_spec(shards, "train")
    if spec.samples < batch_size:
        raise click.UsageError(f"{spec.samples} train samples: fewer than one batch of {batch_size}")
    click.echo(f"bench: {spec.samples} train images in {len(spec.tars)} shards, batch {batch_size}, "
               f"{workers} workers, device {device}")
    names = [b.strip() for b in backends.split(",") if b.strip()]
    tasks = plan_chunks(list(spec.tars), None, 0)
    best: dict[str, dict] = {}

    def keep(r: dict) -> None:
        if r["backend"] not in best or r["images_per_s"] > best[r["backend"]]["images_per_s"]:
            best[r["backend"]] = r

    for _ in range(repeat):  # rounds interleave the contenders; each one's best round counts
        for backend in names:
            keep(bench_loader(shards, backend, device, batch_size, workers, batches, seconds, warmup))
        if ceiling:
            if device == "cpu":
                for name, fn in (("decode-only opencv", decode_chunk), ("decode-only pillow", _decode_pillow)):
                    n, dt = decode_pool(tasks, fn, workers)
                    keep({"backend": name, "images_per_s": n / dt})
            try:
                n, dt = decode_dali(spec.tars, device, batch_size, workers, batches)
                keep({"backend": "decode-only dali" + (" (mixed)" if device == "cuda" else ""), "images_per_s": n / dt})
            except ImportError:
                pass
    results = list(best.values())
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
    report = {"device": device, "workers": workers, "batch_size": batch_size, "repeat": repeat, "results": results,
              "cpu": os.cpu_count(), "gpu": torch.cuda.get_device_name() if device == "cuda" else None}
    if json_path:
        write_json(json_path, report)
    click.echo(f"bench: {len(results)} contenders, best of {repeat} rounds, batch {batch_size}, {workers} workers")


if __name__ == "__main__":
    cli.run(main)
