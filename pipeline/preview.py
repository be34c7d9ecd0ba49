"""A picture of one augmented train batch: crops, flips and lighting as the model sees them (denormalized).

    python -m pipeline.preview --shards shards/ --out preview.png [--backend torch] [--count 16]
    python -m pipeline.preview --shards shards/ --backend both       # DALI | reference, same samples and draws

Each tile's caption: label, class (wnid and, when manifest.json has `class_names`, the name), the crop window's
offset (x, y) in the 256 image, whether it was mirrored, and the lighting alphas. These are the loader's own
draws, not guesses: the DALI pipeline returns them as extra outputs when built with params=True; the reference
loader's draws are a pure function of (seed, epoch, rank, batch) (pipeline/reference.py, train_draws).
`--backend both` takes DALI's batch and, next to each tile, the reference maths (Pillow decode, crop, flip,
lighting, normalization in torch) applied to the same JPEG with the same draws.
"""
from __future__ import annotations

import io
from pathlib import Path

import click
import numpy as np
import torch
from PIL import Image, ImageDraw

from common import cli
from common.files import atomic_write
from pipeline import BACKENDS, Dataset, make_loader, open_dataset
from pipeline.augment import denormalize, lighting_offset, normalize
from pipeline.spec import CROP, ShardSpec


def grid(images: np.ndarray, captions: list[str], columns: int = 4, pad: int = 4, caption_h: int = 40) -> Image.Image:
    """[N, H, W, 3] uint8 -> one image, captions (may hold newlines) under each tile."""
    n, h, w, _ = images.shape
    rows = -(-n // columns)
    sheet = Image.new("RGB", (columns * (w + pad) + pad, rows * (h + caption_h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (img, text) in enumerate(zip(images, captions)):
        x, y = pad + (i % columns) * (w + pad), pad + (i // columns) * (h + caption_h + pad)
        sheet.paste(Image.fromarray(img), (x, y))
        draw.multiline_text((x + 2, y + h + 1), text, fill=(0, 0, 0), spacing=2)
    return sheet


def class_label(data: Dataset, label: int) -> str:
    """`7 n01440764 tench`: the name when the manifest has class_names."""
    names = data.class_names
    return f"{label} {data.classes[label]}" + (f" {names[label]}" if names else "")


def caption(data: Dataset, label: int, xy, flip: bool, alpha) -> str:
    a = " ".join(f"{v:+.3f}" for v in alpha)
    return f"{class_label(data, label)}\ncrop x={xy[0]} y={xy[1]} {'flipped' if flip else 'not flipped'}\n" \
           f"alpha {a}"


def to_pixels(x: torch.Tensor, spec: ShardSpec) -> np.ndarray:
    """Normalized [N, 3, H, W] -> uint8 [N, H, W, 3], lighting left in (what the model sees)."""
    return np.clip(denormalize(x, spec.mean, spec.std), 0, 255).round().astype(np.uint8).transpose(0, 2, 3, 1)


def reference_maths(jpeg: bytes, xy, flip: bool, alpha, spec: ShardSpec) -> torch.Tensor:
    """The reference loader's transform of one JPEG with given draws -> normalized [1, 3, 224, 224]."""
    img = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    x, y = int(xy[0]), int(xy[1])
    img = img[y:y + CROP, x:x + CROP]
    if flip:
        img = img[:, ::-1]
    chw = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    f = dict(dtype=torch.float32)
    offset = lighting_offset(torch.tensor(np.asarray(alpha)[None], **f), torch.tensor(spec.eigval, **f),
                             torch.tensor(spec.eigvec, **f))
    return normalize(chw, torch.tensor(spec.mean, **f), torch.tensor(spec.std, **f), offset)


def dali_batch(spec: ShardSpec, count: int, seed: int):
    from pipeline.dali import DaliLoader
    loader = DaliLoader(spec, count, device=torch.device("cpu"), rank=0, world_size=1, seed=seed, augment=True,
                        ten_crop=False, workers=1, limit=None, params=True)
    images, labels = next(iter(loader))
    return images, labels, loader.params


def reference_batch(data: Dataset, count: int, seed: int):
    from pipeline.reference import train_draws
    loader = make_loader(data, "train", count, backend="torch", device="cpu", seed=seed, workers=0)
    images, labels = next(iter(loader))
    xy, flip, alpha = train_draws(seed, 0, 0, 0, len(labels))  # epoch 0, rank 0, batch 0: what it just drew
    return images, labels, {"xy": xy, "flip": flip, "alpha": alpha}


def preview(shards: Path, backend: str, count: int, seed: int) -> tuple[Image.Image, dict]:
    """The picture, and for --backend both the largest DALI vs reference pixel difference."""
    data = open_dataset(shards)
    spec = data.split("train")
    if backend == "torch":
        images, labels, d = reference_batch(data, count, seed)
    else:
        images, labels, d = dali_batch(spec, count, seed)
    captions = [caption(data, int(y), d["xy"][i], bool(d["flip"][i]), d["alpha"][i]) for i, y in enumerate(labels)]
    tiles = to_pixels(images, spec)
    if backend != "both":
        return grid(tiles, captions), {}
    ref = torch.cat([reference_maths(d["jpeg"][i], d["xy"][i], d["flip"][i], d["alpha"][i], spec)
                     for i in range(len(labels))])
    ref_tiles = to_pixels(ref, spec)
    diff = np.abs(tiles.astype(int) - ref_tiles.astype(int)).reshape(len(tiles), -1)
    pairs = np.stack([tiles, ref_tiles], 1).reshape(-1, *tiles.shape[1:])
    pair_captions = []
    for i, c in enumerate(captions):
        pair_captions += [f"DALI  {c}", f"reference, same draws\nmean |diff| {diff[i].mean():.2f} of 255"]
    return grid(pairs, pair_captions), {"max_abs_diff": int(diff.max()), "mean_abs_diff": float(diff.mean())}


@click.command(context_settings=cli.CONTEXT)
@click.option("--shards", default="shards", show_default=True, metavar="DIR|URL")
@click.option("--out", default="preview.png", show_default=True, type=click.Path(path_type=Path))
@click.option("--backend", type=click.Choice([*BACKENDS, "both"]), default=cli.default(make_loader, "backend"),
              show_default=True, help="both: DALI's tiles next to the reference maths on the same samples and draws.")
@click.option("--count", default=16, show_default=True, type=click.IntRange(1, 256))
@click.option("--seed", default=cli.default(make_loader, "seed"), show_default=True)
def main(shards, out, backend, count, seed):
    """Save a grid of one augmented train batch, each tile with its class, crop, flip and lighting."""
    sheet, diff = preview(shards, backend, count, seed)
    with atomic_write(out) as f:
        sheet.save(f, format="PNG")
    extra = f"; DALI vs reference mean |diff| {diff['mean_abs_diff']:.2f}, max {diff['max_abs_diff']} of 255" \
        if diff else ""
    click.echo(f"preview: {count} augmented train images ({backend}) -> {out}{extra}")


if __name__ == "__main__":
    cli.run(main)
