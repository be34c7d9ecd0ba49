"""ImageNet tree -> 256x256 WebDataset shards + DALI index files + manifest.json (docs/FORMAT.md, "Shards").

    python tools/make_shards.py --src /data/ILSVRC2012 --out shards/     # any layout of docs/sources.md
    python tools/make_shards.py --train-archive ILSVRC2012_img_train.tar --val-archive ILSVRC2012_img_val.tar \
        --devkit ILSVRC2012_devkit_t12.tar.gz --out shards/
    python tools/make_shards.py --src demo/imagenet --out shards/ --splits train,val --shard-size 200
    python tools/make_shards.py --src /data/ILSVRC2012 --out shards/ --part 3/8    # one of 8 machines
    python tools/make_shards.py --src /data/ILSVRC2012 --out shards/ --merge 8     # once all 8 are done

A thin command over shardkit.convert (how the conversion works is described there). Re-running keeps
finished shards and converts the rest; the bytes do not depend on --workers. With --verify, finished shards
are re-hashed and any whose bytes changed is made again (the repair after tools/verify_shards.py finds one).
--part K/N makes only part K of N (every N-th shard) into the shared --out; --merge N, with the same options,
writes the manifest once all N are done, byte-identical to one run's (docs/cluster.md: Slurm and ssh scripts).
"""
from __future__ import annotations

import json
from dataclasses import asdict
from functools import partial
from pathlib import Path

import click

from common import cli
from shardkit.convert import Options, convert
from shardkit.layouts import NAMES
from shardkit.parts import Part, part_options

default = partial(cli.default, Options)


@click.command(context_settings=cli.CONTEXT)
@click.option("--src", type=click.Path(path_type=Path),
              help="A folder holding ImageNet in any layout of docs/sources.md, recognized by itself: a tree "
                   "(train/, val/ or ILSVRC/Data/CLS-LOC/), the official ILSVRC2012_img_train.tar, "
                   "ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz, Hugging Face's ILSVRC/imagenet-1k "
                   "(parquet or gzip tars), or timm's imagenet-1k-wds.")
@click.option("--layout", type=click.Choice(NAMES), help="Which layout of --src to read, when it holds two.")
@click.option("--train-archive", type=click.Path(path_type=Path), help="ILSVRC2012_img_train.tar, read in place.")
@click.option("--val-archive", type=click.Path(path_type=Path), help="ILSVRC2012_img_val.tar, read in place.")
@click.option("--devkit", type=click.Path(path_type=Path),
              help="ILSVRC2012_devkit_t12.tar.gz or its extracted folder: val labels (meta.mat + ground truth) and class names.")
@click.option("--out", default=default("out"), show_default=True, metavar="DIR", help="Output folder (local: upload it afterwards with tools/stage_shards.py).")
@click.option("--splits", default=",".join(default("splits")), show_default=True, help="Comma-separated: train, val.")
@click.option("--size", default=default("size"), show_default=True, type=click.IntRange(16, 4096), help="Output side in pixels.")
@click.option("--quality", default=default("quality"), show_default=True, type=click.IntRange(1, 100), help="JPEG quality.")
@click.option("--shard-size", default=default("shard_size"), show_default=True, type=click.IntRange(1), help="Images per shard (at most).")
@part_options("manifest.json", "Make")
@click.option("--seed", default=default("seed"), show_default=True, help="Seed of the global train shuffle.")
@click.option("--val-labels", type=click.Path(path_type=Path), help="Labels of a flat val folder (LOC_val_solution.csv or 'filename wnid').")
@click.option("--strict", is_flag=True, help="Stop at the first file that cannot be decoded.")
@click.option("--verify", is_flag=True, help="Re-hash finished shards; re-make those whose size or SHA-256 changed.")
def main(src, layout, train_archive, val_archive, devkit, out, splits, size, quality, shard_size, workers, seed,
         val_labels, strict, verify, part, merge):
    """Convert ImageNet, held in any layout of docs/sources.md, to 256x256 WebDataset shards (docs/FORMAT.md)."""
    opts = Options(src=src and str(src), train_archive=train_archive and str(train_archive),
                   val_archive=val_archive and str(val_archive), devkit=devkit and str(devkit), out=str(out),
                   splits=tuple(s.strip() for s in splits.split(",") if s.strip()),
                   size=size, quality=quality, shard_size=shard_size, workers=workers, seed=seed,
                   val_labels=val_labels and str(val_labels), strict=strict, verify=verify, layout=layout,
                   part=part and Part.parse(part), merge=merge)
    click.echo("options: " + json.dumps(asdict(opts)))
    convert(opts)


if __name__ == "__main__":
    cli.run(main)
