"""A picture of one augmented train batch: crops, flips and lighting as the model sees them (denormalized).

    python -m pipeline.preview --shards shards/ --out preview.png [--backend torch] [--count 16]
"""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from PIL import Image, ImageDraw

from pipeline import dataset_class_names, make_loader
from pipeline.spec import read_spec
from shardkit import cli
from shardkit.files import atomic_write


def grid(images: np.ndarray, captions: list[str], columns: int = 4, pad: int = 4, caption_h: int = 14) -> Image.Image:
    """[N, H, W, 3] uint8 -> one image, captions under each tile."""
    n, h, w, _ = images.shape
    rows = -(-n // columns)
    sheet = Image.new("RGB", (columns * (w + pad) + pad, rows * (h + caption_h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (img, text) in enumerate(zip(images, captions)):
        x, y = pad + (i % columns) * (w + pad), pad + (i // columns) * (h + caption_h + pad)
        sheet.paste(Image.fromarray(img), (x, y))
        draw.text((x + 2, y + h + 1), text, fill=(0, 0, 0))
    return sheet


@click.command(context_settings=cli.CONTEXT)
@click.option("--shards", default="shards", show_default=True, type=click.Path(path_type=Path))
@click.option("--out", default="preview.png", show_default=True, type=click.Path(path_type=Path))
@click.option("--backend", type=click.Choice(["dali", "torch"]), default="dali", show_default=True)
@click.option("--count", default=16, show_default=True, type=click.IntRange(1, 256))
@click.option("--seed", default=0, show_default=True)
def main(shards, out, backend, count, seed):
    """Save a grid of one augmented train batch, with labels."""
    spec = read_spec(shards, "train")
    loader = make_loader(shards, "train", count, backend=backend, device="cpu", seed=seed, workers=1)
    images, labels = next(iter(loader))
    x = images.numpy() * spec.std.reshape(1, 3, 1, 1) + spec.mean.reshape(1, 3, 1, 1)  # back to [0, 1]
    tiles = (np.clip(x, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    names = dataset_class_names(shards)  # words from the devkit or Kaggle's mapping, when the manifest has them
    captions = [f"{int(y)} {names[int(y)].split(',')[0] if names else spec.classes[int(y)]}" for y in labels]
    with atomic_write(out) as f:
        grid(tiles, captions).save(f, format="PNG")
    click.echo(f"preview: {len(tiles)} augmented train images ({backend}) -> {out}")


if __name__ == "__main__":
    cli.run(main)
