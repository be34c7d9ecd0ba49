"""Benchmark: what a training run's start-up reads from the shards folder, at ImageNet's size (measure.startup).

    python tools/bench_startup.py                       # 1,281,167 train + 50,000 val index entries, made here
    python tools/bench_startup.py --keep synthetic/     # keep the synthetic folder (about 95 MB of .idx)
    python tools/bench_startup.py --train 100000 --json startup.json

Times, best of --repeat interleaved rounds, the calls model.train makes of the data (classes, statistics,
class names, the train and val loaders, the final 10-crop loader) in two ways: each call given the folder,
as before pipeline.open_dataset, and one Dataset handed to all. Prints seconds and bytes read.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import click

from common import cli
from common.files import write_json
from common.timing import time_calls
from measure.startup import index_bytes, measure, write_synthetic


@click.command(context_settings=cli.CONTEXT)
@click.option("--train", default=1_281_167, show_default=True, type=click.IntRange(1), help="Train index entries.")
@click.option("--val", default=50_000, show_default=True, type=click.IntRange(1), help="Val index entries.")
@click.option("--repeat", default=3, show_default=True, type=click.IntRange(1), help="Rounds; the best counts.")
@click.option("--keep", type=click.Path(path_type=Path), help="Make (or reuse) the synthetic folder here.")
@click.option("--json", "json_path", type=click.Path(path_type=Path))
def main(train, val, repeat, keep, json_path):
    """Start-up of a training run: every consumer reading the shards folder itself vs one read handed down."""
    root = keep or Path(tempfile.mkdtemp(prefix="bench_startup_"))
    try:
        if not (root / "manifest.json").is_file():
            t = time_calls(lambda: write_synthetic(root, train, val))
            click.echo(f"synthetic shards folder: {train} train + {val} val index entries in {root} "
                       f"({t.seconds:.1f} s)")
        idx = index_bytes(root)
        rows = measure(root, repeat)
        click.echo("\n| start-up | seconds | MB read | x the .idx files |\n|---|---|---|---|")
        for r in rows:
            r["x_index"] = r["bytes_read"] / idx
            click.echo(f"| {r['way']} | {r['seconds']:.2f} | {r['bytes_read'] / 1e6:.0f} | {r['x_index']:.2f} |")
        if json_path:
            write_json(json_path, {"train": train, "val": val, "index_bytes": idx, "results": rows})
        click.echo(f"bench_startup: {train + val} index entries ({idx / 1e6:.0f} MB of .idx), best of {repeat}; "
                   f"read once is {rows[0]['seconds'] / rows[1]['seconds']:.2f}x faster")
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    cli.run(main)
