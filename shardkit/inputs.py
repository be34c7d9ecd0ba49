"""Where each split comes from, in whichever layout ImageNet is held, and its listing in the canonical order.

    inputs = resolve(src="/data/ILSVRC2012", splits=("train", "val"))     # the layout is recognized
    inputs = resolve(train_archive="ILSVRC2012_img_train.tar", val_archive="ILSVRC2012_img_val.tar",
                     devkit="ILSVRC2012_devkit_t12.tar.gz", splits=("train", "val"))

SRC's layout is recognized by shardkit.layouts (a tree, Kaggle's, the official files, Hugging Face's parquet
or gzip tars, timm's WebDataset tars; --layout when it holds two); a named archive (--train-archive /
--val-archive) wins for its split. The classes are the sorted wnids of the train split. The devkit (named, or
ILSVRC2012_devkit_t12.tar.gz / ILSVRC2012_devkit_t12/ in SRC) labels a flat val split and names the classes;
so do Kaggle's LOC_synset_mapping.txt and Hugging Face's classes.py. Every listing ends in
shardkit.sources.canonical, so the order does not depend on the layout. Streamed layouts (Hugging Face) are
converted while they are read (shardkit.stream): their listing points into a spill file under `spill_dir`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from common.errors import ConfigError
from shardkit import archives, devkit as devkit_files, hf, layouts, sources, stream, timm_wds

SYNSET_MAPPING = "LOC_synset_mapping.txt"
SPLIT_ORDER = ("train", "val")  # train first: it names the classes


@dataclass
class Inputs:
    classes: list[str]
    listings: dict[str, sources.Listing]
    origins: dict[str, str]                  # split -> what it is read from
    class_names: list[str] | None = None     # words of each class, in label order
    index_seconds: float = 0.0               # time spent reading archive headers
    archives: list[str] = field(default_factory=list)
    how: list[str] = field(default_factory=list)     # how streamed splits were read, for the summary
    spills: dict[str, Path] = field(default_factory=dict)  # split -> its spill file (streamed layouts)
    notes: list[str] = field(default_factory=list)
    restream: dict = field(default_factory=dict)  # split -> () -> its listing from a new streaming pass


@dataclass(frozen=True)
class Streaming:
    """What a streamed layout needs to convert while it reads: where to spill, and the conversion options."""
    spill_dir: Path
    size: int = 256
    quality: int = 90


def _src_folder(src: str | None) -> Path | None:
    if not src:
        return None
    src_dir = Path(src)
    if src_dir.is_file() and src_dir.name.endswith((".tar", ".tar.gz")):
        raise ConfigError(f"--src {src_dir}: a file; --src is a folder (a tree, or one holding the official "
                          "archives); name an archive with --train-archive, --val-archive or --devkit")
    return sources.require_src_folder(src_dir)


def resolve(src: str | None = None, *, splits: tuple[str, ...], train_archive: str | None = None,
            val_archive: str | None = None, devkit: str | None = None, val_labels: str | None = None,
            workers: int = 1, layout: str | None = None, streaming: Streaming | None = None) -> Inputs:
    src_dir = _src_folder(src)
    named = {"train": train_archive, "val": val_archive if "val" in splits else None}
    if src_dir is None and not train_archive:
        raise ConfigError("give --src (an ImageNet tree, or a folder holding the official archives) or "
                          f"--train-archive {archives.TRAIN} (the classes come from the train split)")
    found = None
    needed = tuple(s for s in SPLIT_ORDER if s in splits and not named[s])
    if src_dir is not None and (needed or not named["train"]):
        found = layouts.recognize(src_dir, needed, layout, classes=not named["train"])
        for line in layouts.describe(src_dir, found):
            click.echo(line)
    kit_path = Path(devkit) if devkit else devkit_files.find(src_dir)
    reading = _Reading(src_dir, found, named, devkit_files.load(kit_path) if kit_path else None,
                       val_labels and Path(val_labels), workers, streaming or Streaming(Path(".make_shards")))
    for split in SPLIT_ORDER:
        if split in splits:
            reading.read(split)
    listings = {s: sources.canonical(s, reading.listings[s]) for s in splits}
    own = _own_names(src_dir, found)
    return Inputs(reading.classes, listings, {s: reading.origins[s] for s in splits},
                  _class_names(reading.classes, own, reading.kit, src_dir), reading.index_seconds,
                  reading.archives, reading.how, reading.spills, reading.notes, reading.restream)


def _own_names(src: Path | None, found: layouts.Layout | None) -> tuple[dict[str, str], str] | None:
    if found is not None and found.name.startswith("hf-") and (src / hf.CLASSES).is_file():
        return hf.read_classes(src / hf.CLASSES), str(src / hf.CLASSES)
    return None


class _Reading:
    """Lists each split from where it is (train first: the classes come from it) and keeps what it learnt."""

    def __init__(self, src: Path | None, found: layouts.Layout | None, named: dict, kit, val_labels: Path | None,
                 workers: int, streaming: Streaming):
        self.src, self.kit, self.val_labels, self.workers, self.streaming = src, kit, val_labels, workers, streaming
        self.kinds = {s: "official" if named[s] else (found.name if found else None) for s in SPLIT_ORDER}
        self.files = {s: [Path(named[s])] if named[s] else (found.files.get(s, []) if found else [])
                      for s in SPLIT_ORDER}
        self.classes: list[str] | None = None
        self.listings, self.origins, self.how, self.spills, self.notes = {}, {}, [], {}, []
        self.restream: dict = {}  # split -> a new streaming pass, for a reused listing whose spill is gone
        self.archives: list[str] = []
        self.index_seconds = 0.0
        self._official_inner = None
        self._timm: dict[str, tuple] = {}

    def read(self, split: str) -> None:
        kind = self.kinds[split]
        if self.classes is None and not (kind.startswith("hf-") and split == "train"):
            self.classes = self._train_classes()
        t0 = time.perf_counter()
        if kind in ("tree", "kaggle"):
            self.listings[split] = self._tree(split)
            self.origins[split] = str(self.src)
            return
        self.listings[split] = {"official": self._official, "timm-wds": self._timm_split,
                                "hf-parquet": self._hf, "hf-tar": self._hf}[kind](split)
        self.origins[split] = str(self.files[split][0]) if len(self.files[split]) == 1 else str(self.src)
        if not kind.startswith("hf-"):  # read by offset after indexing (a streamed split says how in `how`)
            self.archives += [str(p) for p in self.files[split]]
            self.index_seconds += time.perf_counter() - t0

    def _train_classes(self) -> list[str]:
        kind, files = self.kinds["train"], self.files["train"]
        if kind in ("tree", "kaggle"):
            return sources.train_classes(self.src)
        t0 = time.perf_counter()
        if kind == "official":
            classes, self._official_inner = archives.train_classes(files[0])
        elif kind == "timm-wds":
            self._timm["train"] = timm_wds.list_split(files, self.workers, "train")
            classes = timm_wds.classes_of(self._timm["train"][0])
        elif (self.src / hf.CLASSES).is_file():  # a Hugging Face download whose train split is not read now
            classes = sorted(hf.read_classes(self.src / hf.CLASSES))
        else:
            raise sources.SourceError(f"{self.src}: no {hf.CLASSES}, and the train split is not converted now: the "
                                      "classes of a Hugging Face download come from one of them; add train to "
                                      f"--splits, or put the dataset's {hf.CLASSES} in {self.src}")
        self.index_seconds += time.perf_counter() - t0
        if not classes:
            raise sources.SourceError(f"{files[0] if files else self.src}: no train classes found")
        return classes

    def _tree(self, split: str) -> sources.Listing:
        if split == "train":
            return sources.list_train(self.src, self.classes)
        return sources.list_val(self.src, self.classes, self.val_labels, self.kit)

    def _official(self, split: str) -> sources.Listing:
        path = self.files[split][0]
        if split == "train":
            if self._official_inner is None:  # the classes came from elsewhere: index this archive's classes
                _, self._official_inner = archives.train_classes(path)
            return archives.list_train(path, self.classes, self._official_inner, self.workers)
        labels, label_source = sources.val_labels_of(None, None, self.classes, self.val_labels, self.kit)
        listing = archives.list_val(path, labels, Path(label_source).name)
        if not listing.items:
            raise sources.SourceError(f"{label_source}: labels none of the images in {path} "
                                      "(wrong labels file or devkit?)")
        return listing

    def _timm_split(self, split: str) -> sources.Listing:
        samples, damaged = self._timm.get(split) or timm_wds.list_split(self.files[split], self.workers, split)
        listing, mapped = timm_wds.listing(samples, damaged, self.classes, str(self.files[split][0].parent))
        if mapped:
            self.notes.append(f"{split}: {mapped} samples' .cls differ from the sorted-wnid index of the class in "
                              "their .json; labelled by that class")
        return listing

    def _hf(self, split: str, reuse: bool = True) -> sources.Listing:
        """A Hugging Face split: the listing of the last pass over the same files, or a new streaming pass."""
        files = self.files[split]
        spill = self.streaming.spill_dir / f"{split}.spill"
        record = spill.with_suffix(".listing.json")
        stamp = stream.stamp(files, self.streaming.size, self.streaming.quality)
        saved = stream.load_listing(record, stamp) if reuse else None
        if saved is None:
            saved = self._stream(split, files, spill, record, stamp)
        else:
            self.how.append(f"{split}: the listing of the last streaming pass reused (the files are unchanged)")
            self.restream[split] = lambda: sources.canonical(split, self._hf(split, reuse=False))
        spilled, skipped, ignored = saved
        self.spills[split] = spill
        if self.classes is None:
            self.classes = sorted({m.wnid for m, _ in spilled})
        return hf.listing(spilled, self.classes, skipped, ignored, str(files[0].parent))

    def _stream(self, split: str, files: list[Path], spill: Path, record: Path, stamp: list) -> tuple:
        record.unlink(missing_ok=True)  # a pass cut short must not leave the record of an older spill
        order = list(hf.read_classes(self.src / hf.CLASSES)) if (self.src / hf.CLASSES).is_file() else None
        reading = hf.Reading(order)
        parquet = self.kinds[split] == "hf-parquet"
        members = (hf.parquet_members if parquet else hf.tar_members)(files, reading)
        what = f"{len(files)} {'parquet file' if parquet else 'gzip tar'}{'s' * (len(files) > 1)}"
        step = stream.Pass(f"{split}: {what}")
        spilled = stream.convert_stream(members, spill, size=self.streaming.size, quality=self.streaming.quality,
                                        workers=self.workers, total=hf.parquet_rows(files) if parquet else 0,
                                        desc=split)
        self.how.append(step.done(len(spilled)))
        if reading.label_mismatches:
            self.notes.append(f"{split}: {reading.label_mismatches} rows' label column differs from the place of "
                              f"their wnid in {hf.CLASSES}; labelled by the wnid in their name")
        stream.save_listing(record, stamp, spilled, reading.skipped, reading.ignored)
        return spilled, reading.skipped, reading.ignored


def _class_names(classes: list[str], own: tuple[dict[str, str], str] | None, kit: devkit_files.Devkit | None,
                 src: Path | None) -> list[str] | None:
    """The words of each class from the download's own list (Hugging Face's classes.py), the devkit or Kaggle's
    synset mapping; None if none of them names them all."""
    synsets = src and (src / SYNSET_MAPPING).is_file() and src / SYNSET_MAPPING
    for words, source in (own or (None, None), (kit and kit.words, kit and kit.source),
                          (synsets and sources.read_synset_mapping(synsets), synsets)):
        if not words:
            continue
        missing = [c for c in classes if c not in words]
        if not missing:
            return [words[c] for c in classes]
        click.echo(f"note: {source} does not name {len(missing)} of the {len(classes)} classes "
                   f"(e.g. {missing[0]}); the manifest gets no class_names from it", err=True)
    return None
