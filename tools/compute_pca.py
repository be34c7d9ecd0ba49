"""RGB mean, std, covariance and its PCA over every pixel of the train shards -> shards/pca.json.

    python tools/compute_pca.py --shards shards/
    python tools/compute_pca.py --shards shards/ --max-images 10000 --seed 0   # quick, seeded estimate
    python tools/compute_pca.py --shards shards/ --mean-image                  # also shards/mean_image.npy
    python tools/compute_pca.py --shards shards/ --part 2/4                    # one of 4 machines
    python tools/compute_pca.py --shards shards/ --merge 4                     # pca.json once all 4 are done

A thin command over shardkit.stats (exact integer sums, the same bits for any --workers; see there).
An up-to-date pca.json is kept; --force recomputes it and replaces it only when the new one is complete.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from functools import partial
from pathlib import Path

import click

from common import cli
from shardkit.parts import Part, part_options
from shardkit.stats import Options, compute

default = partial(cli.default, Options)


@click.command(context_settings=cli.CONTEXT)
@click.option("--shards", default=default("shards"), show_default=True, metavar="DIR", help="Folder with manifest.json.")
@part_options("pca.json", "Sum")
@click.option("--max-images", default=default("max_images"), type=click.IntRange(1), help="Use a seeded random subset of this many images.")
@click.option("--seed", default=default("seed"), show_default=True, help="Seed of the --max-images subset.")
@click.option("--out", type=click.Path(path_type=Path), help="Output path [default: SHARDS/pca.json].")
@click.option("--mean-image", is_flag=True, help="Also write the per-pixel mean image (the paper's) as mean_image.npy.")
@click.option("--force", is_flag=True, help="Recompute even if pca.json is up to date.")
def main(shards, workers, max_images, seed, out, mean_image, force, part, merge):
    """Exact RGB statistics and PCA of the train shards (see docs/FORMAT.md)."""
    opts = Options(shards=str(shards), workers=workers, max_images=max_images, seed=seed, out=out and str(out),
                   mean_image=mean_image, force=force, part=part and Part.parse(part), merge=merge)
    click.echo("options: " + json.dumps(asdict(opts)))
    compute(opts)


if __name__ == "__main__":
    cli.run(main)
