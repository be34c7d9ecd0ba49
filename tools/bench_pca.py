"""Benchmark: tools/compute_pca.py against the plain decode rate of the same shards on the same cores.

    python tools/bench_pca.py                          # makes 1200 photo-like 256x256 shard images first
    python tools/bench_pca.py --shards shards/ --workers 1,2 --json bench_pca.json

"Plain decode" reads the same samples by offset and decodes them with the same decoder (OpenCV), in the same
worker pool and chunks, and does nothing else. compute_pca runs as the CLI does (forced, into a temporary
file). Rounds interleave the contenders; each one's best round counts.
"""
from __future__ import annotations

import shutil
import tempfile
from functools import partial
from pathlib import Path

import click

from common import cli
from measure.data import photo_shards
from shardkit import stats
from common.files import write_json
from shardkit.format import split_shards
from common.parallel import ordered_map
from common.timing import best_of, time_calls


def decode_all(shards: Path, workers: int) -> int:
    tars, _ = split_shards(shards, "train")
    tasks = stats.plan_chunks(tars, None, 0)
    return sum(ordered_map(stats.decode_chunk, tasks, workers, chunksize=1, ahead=2))


def fresh_pca(shards: Path, workers: int, out: Path) -> dict:
    # force: no reuse of an up-to-date result, every round computes
    return stats.compute(stats.Options(shards=str(shards), workers=workers, out=str(out), force=True))


@click.command(context_settings=cli.CONTEXT)
@click.option("--shards", type=click.Path(path_type=Path), help="A shards folder (default: generated).")
@click.option("--images", default=1200, show_default=True, help="Generated images when --shards is not given.")
@click.option("--workers", default="1,2", show_default=True)
@click.option("--repeat", default=3, show_default=True, type=click.IntRange(1))
@click.option("--json", "json_path", type=click.Path(path_type=Path))
def main(shards, images, workers, repeat, json_path):
    """compute_pca images/s vs plain decode images/s."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_pca_"))
    try:
        if shards is None:
            shards = photo_shards(tmp, images, shard_size=300)
        n = decode_all(shards, 1)  # also warms the page cache
        runs = []
        for w in [int(x) for x in workers.split(",")]:
            runs.append(("plain decode (OpenCV)", w, partial(decode_all, shards, w)))
            runs.append(("compute_pca", w, partial(fresh_pca, shards, w, tmp / f"pca{w}.json")))
        best = best_of([partial(time_calls, fn) for *_, fn in runs], repeat)
        results = [{"task": name, "workers": w, "images_per_s": n / t.seconds} for (name, w, _), t in zip(runs, best)]
        click.echo("\n| workers | plain decode images/s | compute_pca images/s | pca / decode |\n|---|---|---|---|")
        for dec, pca in zip(results[::2], results[1::2]):
            pca["vs_decode"] = pca["images_per_s"] / dec["images_per_s"]
            click.echo(f"| {dec['workers']} | {dec['images_per_s']:.0f} | {pca['images_per_s']:.0f} | {pca['vs_decode']:.2f}x |")
        pcas = [r for r in results if r["task"] == "compute_pca"]
        for r in pcas[1:]:
            r["vs_one_worker"] = r["images_per_s"] / pcas[0]["images_per_s"]
            click.echo(f"compute_pca scaling: {r['workers']} workers = {r['vs_one_worker']:.2f}x of {pcas[0]['workers']}")
        if json_path:
            write_json(json_path, {"images": n, "results": results})
        click.echo(f"bench_pca: {n} images, best of {repeat} rounds")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    cli.run(main)
