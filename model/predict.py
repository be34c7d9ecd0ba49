"""Top-5 classes of images with a trained model.

    python -m model.predict --checkpoint runs/alexnet/model.pt cat.jpg dog.png
    python -m model.predict --weights alexnet-owt-7be5be79.pth --variant torchvision --shards shards/ cat.jpg
    python -m model.predict --checkpoint ... --ten-crop photos/*.jpg

The val preprocessing: shorter side to 256 (antialiased), centre 256, centre 224 (or the paper's 10 windows
with --ten-crop, softmax averaged), normalised with the statistics the model was trained with. A checkpoint
names its classes; for a plain weights file, --shards takes them from a manifest (else class indices print).
A file that cannot be read gets an `error:` line and the others go on; the exit code is then 2.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click
import torch

from model.inference import load_image, load_model, model_options, prepare, probabilities
from pipeline import open_dataset
from common import cli
from common.errors import ConfigError, DataError


def label(meta: dict, index: int) -> str:
    classes, names = meta.get("classes"), meta.get("class_names")
    if not classes:
        return f"class {index}"
    return f"{classes[index]} ({names[index]})" if names else classes[index]


def predict(model, meta: dict, paths: list[Path], *, ten_crop: bool = False, top: int = 5, batch_size: int = 16,
            echo=click.echo, warn=lambda s: click.echo(s, err=True)) -> tuple[dict[str, list], list[str]]:
    """{path: [(label, probability)] * top} for the readable images, and the error lines of the others."""
    results, errors = {}, []
    for i in range(0, len(paths), batch_size):
        images, names = [], []
        for p in paths[i:i + batch_size]:
            try:
                images.append(load_image(p))
                names.append(str(p))
            except DataError as e:
                errors.append(f"error: {e}; skipped")
                warn(errors[-1])
        if not images:
            continue
        prob = probabilities(model, prepare(torch.stack(images), meta, ten_crop=ten_crop))
        values, indices = prob.topk(min(top, prob.shape[-1]), dim=-1)
        for name, v, k in zip(names, values.tolist(), indices.tolist()):
            results[name] = [(label(meta, j), p) for j, p in zip(k, v)]
            echo(name)
            for rank, (lab, p) in enumerate(results[name], 1):
                echo(f"  {rank}. {p:7.4f}  {lab}")
    return results, errors


def fill_from_shards(meta: dict, shards: Path, outputs: int) -> None:
    """Classes (and statistics, for a checkpoint without them) from a shards folder, where meta lacks them."""
    data = open_dataset(shards)
    if len(data.classes) != outputs:
        raise ConfigError(f"{shards}: the manifest has {len(data.classes)} classes, the model {outputs}; "
                          "leave out --shards or give the matching shards")
    if not meta.get("classes"):
        names = data.class_names
        meta.update(classes=list(data.classes), class_names=list(names) if names else None)
    if meta["mean"] is None:
        meta.update(mean=data.stats["mean"], std=data.stats["std"])


@click.command(context_settings=cli.CONTEXT)
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@model_options
@click.option("--shards", metavar="DIR|URL",
              help="Class ids from this manifest (for --weights, or an old checkpoint).")
@click.option("--ten-crop", is_flag=True, help="The paper's 10-crop test instead of the centre crop.")
@click.option("--top", default=5, show_default=True, type=click.IntRange(1))
def main(images, checkpoint, weights, variant, lrn, shards, ten_crop, top):
    """Print the top classes with their probabilities for each image."""
    model, meta = load_model(checkpoint=checkpoint, weights=weights, variant=variant, lrn=lrn)
    if shards is not None:
        fill_from_shards(meta, shards, model.classifier[-1].out_features)
    if meta["mean"] is None:
        raise ConfigError(f"{checkpoint}: predates the normalisation statistics in checkpoints; "
                          "give --shards with the shards it was trained on")
    results, errors = predict(model, meta, list(images), ten_crop=ten_crop, top=top)
    click.echo(f"predict: {len(results)} images classified, {len(errors)} unreadable"
               f" ({'10-crop' if ten_crop else 'centre crop'}, {meta['variant']})")
    if errors:
        sys.exit(cli.EXIT_USER_ERROR)


if __name__ == "__main__":
    cli.run(main)
