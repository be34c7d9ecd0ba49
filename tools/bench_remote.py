"""Benchmark: the loaders reading the same shards from a local S3 server and from the local disk.

    python tools/bench_remote.py                                  # makes 600 photo-like shard images first
    python tools/bench_remote.py --shards shards/ --workers 2 --backends torch,dali --json bench_remote.json

The shards are uploaded (tools/stage_shards.py's code) to moto's S3 server, started on 127.0.0.1 for the run
(tools/measure/s3server.py); each contender is the full train pipeline (measure.loader_speed.bench_loader,
common.timing), from `s3://bench/shards` and from the folder, in interleaved rounds, the best round counting.
The reference loader reads every sample by one ranged GET; DALI reads s3:// through its own S3 client. A last
row reads every sample by a ranged GET and decodes nothing: what the server can serve. The server (moto, in
Python) is on the loopback and shares the cores with the loaders: the figures are the cost of one request per
sample to that server, not the latency of a real network (tens of ms per GET on a cloud store, which more
loader workers hide) nor a real store's rate.
"""
from __future__ import annotations

import shutil
import tempfile
from functools import partial
from pathlib import Path

import click

from common import cli
from measure.data import photo_shards
from common.files import write_json
from common.parallel import default_workers
from common.timing import best_of
from measure.loader_speed import bench_loader, decode_rate, read_only
from measure.s3server import local_s3, make_bucket
from shardkit.format import split_shards
from shardkit.stage import stage

BUCKET = "bench"


def contender(where: str, shards: str, backend: str, batch_size: int, workers: int, batches: int) -> dict:
    row = bench_loader(shards, backend, "cpu", batch_size, workers, batches, None, 3)
    return {**row, "where": where}


def ceiling(remote: str, workers: int) -> dict:
    """What the server serves: every sample read by one ranged GET, nothing decoded."""
    tars, _ = split_shards(remote, "train")
    return {"backend": "ranged GETs alone", "where": "S3", "images_per_s": decode_rate(tars, read_only, workers).per_s}


@click.command(context_settings=cli.CONTEXT)
@click.option("--shards", type=click.Path(path_type=Path), help="A local shards folder (default: generated).")
@click.option("--images", default=600, show_default=True, help="Generated images when --shards is not given.")
@click.option("--backends", default="torch", show_default=True, help="Comma-separated: torch, dali.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--workers", type=click.IntRange(1), help="Loader processes/threads [default: all cores].")
@click.option("--batches", default=20, show_default=True, type=click.IntRange(1), help="Timed batches per contender.")
@click.option("--repeat", default=3, show_default=True, type=click.IntRange(1), help="Rounds; the best counts.")
@click.option("--json", "json_path", type=click.Path(path_type=Path))
def main(shards, images, backends, batch_size, workers, batches, repeat, json_path):
    """Reference-loader images/s from a local S3 server vs from the local disk, same shards."""
    workers = workers or default_workers()
    tmp = Path(tempfile.mkdtemp(prefix="bench_remote_"))
    try:
        if shards is None:
            shards = photo_shards(tmp, images, shard_size=100)
            from shardkit.stats import Options as PcaOptions, compute
            compute(PcaOptions(shards=str(shards)))
        with local_s3() as endpoint:
            make_bucket(BUCKET)
            remote = f"s3://{BUCKET}/shards"
            stage(str(shards), remote)
            names = [b.strip() for b in backends.split(",") if b.strip()]
            runs = [partial(contender, where, path, b, batch_size, workers, batches)
                    for b in names for where, path in (("local disk", str(shards)), (f"S3 ({endpoint})", remote))]
            runs.append(partial(ceiling, remote, workers))
            results = best_of(runs, repeat, rate=lambda r: r["images_per_s"])
        click.echo("\n| backend | shards on | images/s | vs local disk |\n|---|---|---|---|")
        for local, s3 in zip(results[:-1:2], results[1:-1:2]):
            s3["vs_local"] = s3["images_per_s"] / local["images_per_s"]
            click.echo(f"| {local['backend']} | local disk | {local['images_per_s']:.0f} | 1.00x |")
            click.echo(f"| {s3['backend']} | local S3 server | {s3['images_per_s']:.0f} | {s3['vs_local']:.2f}x |")
        click.echo(f"| ranged GETs alone, no decoding ({workers} processes) | local S3 server | "
                   f"{results[-1]['images_per_s']:.0f} | - |")
        if json_path:
            write_json(json_path, {"batch_size": batch_size, "workers": workers, "repeat": repeat, "results": results})
        click.echo(f"bench_remote: {len(results)} contenders, best of {repeat} rounds, batch {batch_size}, "
                   f"{workers} workers")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    cli.run(main)
