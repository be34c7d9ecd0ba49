"""Write the built-in demo dataset: a small ImageNet-layout tree of synthetic, learnable images.

    python tools/make_demo_data.py --out demo/imagenet            # 10 classes x (60 train + 10 val)
    python tools/make_demo_data.py --out demo/kaggle --layout kaggle --val-layout folders

A thin command over shardkit.demo_data (what the images are and which odd files it holds: see there).
Same --seed, same bytes; a tree already made is kept.
"""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import click

from common import cli
from shardkit.demo_data import make_demo

default = partial(cli.default, make_demo)


@click.command(context_settings=cli.CONTEXT)
@click.option("--out", default="demo/imagenet", show_default=True, type=click.Path(path_type=Path))
@click.option("--classes", default=default("classes"), show_default=True, type=click.IntRange(2, 1000))
@click.option("--train-per-class", default=default("train_per_class"), show_default=True, type=click.IntRange(1))
@click.option("--val-per-class", default=default("val_per_class"), show_default=True, type=click.IntRange(1))
@click.option("--seed", default=default("seed"), show_default=True)
@click.option("--layout", type=click.Choice(["imagenet", "kaggle"]), default=default("layout"), show_default=True)
@click.option("--val-layout", type=click.Choice(["csv", "txt", "folders"]), default=default("val_layout"), show_default=True)
def main(out, classes, train_per_class, val_per_class, seed, layout, val_layout):
    """Write the synthetic ImageNet-layout demo tree."""
    if (out / "demo.json").is_file():
        click.echo(f"make_demo_data: {out} already made (remove it to make it again)")
        return
    t0 = time.perf_counter()
    info = make_demo(out, classes, train_per_class, val_per_class, seed, layout, val_layout)
    dt = time.perf_counter() - t0
    n = info["train"] + info["val"]
    click.echo(f"make_demo_data: {out}: {classes} classes, {info['train']} train + {info['val']} val images "
               f"({len(info['odd'])} odd, {len(info['broken'])} broken, {len(info['ignored'])} non-image files) "
               f"in {dt:.1f} s, {n / dt:.0f} images/s")


if __name__ == "__main__":
    cli.run(main)
