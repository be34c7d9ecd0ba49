"""Where each split comes from, an extracted tree or an official archive, and its listing.

    inputs = resolve(src="/data/ILSVRC2012", splits=("train", "val"))       # tree folders or the three files
    inputs = resolve(train_archive="ILSVRC2012_img_train.tar", val_archive="ILSVRC2012_img_val.tar",
                     devkit="ILSVRC2012_devkit_t12.tar.gz", splits=("train", "val"))

Per split, a named archive (--train-archive / --val-archive) wins; otherwise SRC's tree folder (train/,
val/ or Kaggle's ILSVRC/Data/CLS-LOC/...) if there is one, else the archive of the official name in SRC.
The devkit (named, or ILSVRC2012_devkit_t12.tar.gz / ILSVRC2012_devkit_t12/ in SRC) labels a flat val split
and names the classes; Kaggle's LOC_synset_mapping.txt in SRC names them too.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from shardkit import archives, devkit as devkit_files, sources
from common.errors import ConfigError

SYNSET_MAPPING = "LOC_synset_mapping.txt"


@dataclass
class Inputs:
    classes: list[str]
    listings: dict[str, sources.Listing]
    origins: dict[str, str]                  # split -> what it is read from
    class_names: list[str] | None = None     # words of each class, in label order
    index_seconds: float = 0.0               # time spent reading archive headers
    archives: list[str] = field(default_factory=list)


def _archive(named: str | None, src: Path | None, split: str, official: str) -> Path | None:
    if named:
        return Path(named)
    if src is not None and sources.split_dir(src, split) is None and (src / official).is_file():
        return src / official
    return None


def resolve(src: str | None = None, *, splits: tuple[str, ...], train_archive: str | None = None,
            val_archive: str | None = None, devkit: str | None = None, val_labels: str | None = None,
            workers: int = 1) -> Inputs:
    src_dir = Path(src) if src else None
    if src_dir is not None:
        if src_dir.is_file() and src_dir.name.endswith((".tar", ".tar.gz")):
            raise ConfigError(f"--src {src_dir}: a file; --src is a folder (a tree, or one holding the official "
                              "archives); name an archive with --train-archive, --val-archive or --devkit")
        sources.require_src_folder(src_dir)
    train_tar = _archive(train_archive, src_dir, "train", archives.TRAIN)
    val_tar = _archive(val_archive, src_dir, "val", archives.VAL) if "val" in splits else None
    if src_dir is None and train_tar is None:
        raise ConfigError("give --src (an ImageNet tree, or a folder holding the official archives) or "
                          f"--train-archive {archives.TRAIN} (the classes come from the train split)")
    kit_path = Path(devkit) if devkit else devkit_files.find(src_dir)
    kit = devkit_files.load(kit_path) if kit_path else None

    t_index = 0.0
    if train_tar is not None:
        classes, inner = archives.train_classes(train_tar)
    else:
        try:
            classes = sources.train_classes(src_dir)
        except sources.SourceError as e:
            raise sources.SourceError(f"{e}; nor the official archive {src_dir / archives.TRAIN}") from None
    listings, origins = {}, {}
    for split in splits:
        t0 = time.perf_counter()
        if split == "train" and train_tar is not None:
            listings[split] = archives.list_train(train_tar, classes, inner, workers)
            origins[split] = str(train_tar)
            t_index += time.perf_counter() - t0
        elif split == "val" and val_tar is not None:
            labels, label_source = sources.val_labels_of(None, None, classes, val_labels and Path(val_labels), kit)
            listings[split] = archives.list_val(val_tar, labels, Path(label_source).name)
            origins[split] = str(val_tar)
            t_index += time.perf_counter() - t0
            if not listings[split].items:
                raise sources.SourceError(f"{label_source}: labels none of the images in {val_tar} "
                                          "(wrong labels file or devkit?)")
        elif split == "train":
            listings[split] = sources.list_train(src_dir, classes)
            origins[split] = str(src_dir)
        else:
            listings[split] = sources.list_val(src_dir, classes, val_labels and Path(val_labels), kit)
            origins[split] = str(src_dir)
    used = [str(p) for p in (train_tar, val_tar) if p is not None]
    return Inputs(classes, listings, origins, _class_names(classes, kit, src_dir), t_index, used)


def _class_names(classes: list[str], kit: devkit_files.Devkit | None, src: Path | None) -> list[str] | None:
    """The words of each class from the devkit or Kaggle's synset mapping; None if neither names them all."""
    for words, source in ((kit and kit.words, kit and kit.source),
                          (src and (src / SYNSET_MAPPING).is_file() and sources.read_synset_mapping(src / SYNSET_MAPPING),
                           src and src / SYNSET_MAPPING)):
        if not words:
            continue
        missing = [c for c in classes if c not in words]
        if not missing:
            return [words[c] for c in classes]
        click.echo(f"note: {source} does not name {len(missing)} of the {len(classes)} classes "
                   f"(e.g. {missing[0]}); the manifest gets no class_names from it", err=True)
    return None
