"""Find the images of an ImageNet tree and their labels, in every layout docs/FORMAT.md lists.

train: SRC/train/<wnid>/*.JPEG, or Kaggle's SRC/ILSVRC/Data/CLS-LOC/train/<wnid>/*.JPEG
val:   SRC/val/<wnid>/*.JPEG (class folders), or flat SRC/val/*.JPEG labelled by
       - Kaggle's LOC_val_solution.csv (ImageId,PredictionString; label = first token), found in SRC,
       - or a text file `filename wnid` (or Caffe's `filename index`, index into the sorted wnids),
       given with --val-labels,
       - or the devkit's ILSVRC2012_validation_ground_truth.txt, read through the devkit's meta.mat (--devkit,
         or meta.mat beside the file).
The official archives (shardkit.archives) list through the same functions (list_classes, list_flat), so both
give the same keys and labels.
Label index = position of the wnid in the sorted list of train wnids. Every layout's listing then goes through
`canonical`, which orders a split by what does not depend on the layout (label and key), so the order is the
same whichever way the images are held (docs/FORMAT.md, "The canonical order").
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from shardkit import devkit as devkit_files
from shardkit.devkit import Devkit
from common.errors import DataError

WNID = re.compile(r"^n\d{8}$")
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
SPLIT_DIRS = ("{split}", "ILSVRC/Data/CLS-LOC/{split}")
VAL_LABEL_FILES = ("LOC_val_solution.csv", "ILSVRC/LOC_val_solution.csv")


class SourceError(DataError):
    """The source tree is not usable; the message says what was looked for."""


@dataclass(frozen=True)
class Item:
    path: str   # relative to SRC, with forward slashes (or the place in an archive)
    label: int
    key: str    # sample key in the shards: the file stem, cleaned by sample_key
    where: object = None  # (archive file, offset, size) when the bytes are in an archive; stream.Spilled if streamed
    name: str = ""        # the file name as the extracted tree has it, when `path` ends in another (Hugging Face)

    @property
    def file_name(self) -> str:
        return self.name or self.path.rsplit("/", 1)[-1]


@dataclass
class Listing:
    items: list[Item]
    skipped: list[dict]   # {"path", "reason"} for files found but not usable (no label, duplicate key)
    ignored: int          # non-image files (.DS_Store, *.txt, ...)


def sample_key(filename: str) -> str:
    """The file stem with every character a key cannot hold (shardkit.format.key_problem: dots, whitespace,
    control characters, undecodable bytes) replaced by '_'; non-ASCII letters are kept. Two files whose keys
    come out equal are a collision: one is kept, the others are skipped and listed (see canonical)."""
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    return "".join("_" if c in "./" or c.isspace() or not c.isprintable() else c for c in stem) or "_"


def is_image_name(name: str) -> bool:
    dot = name.rfind(".")  # Path(name).suffix, without building a Path (called once per image)
    return not name.startswith(".") and 0 < dot < len(name) - 1 and name[dot:].lower() in IMAGE_SUFFIXES


def require_src_folder(src: Path) -> Path:
    src = Path(src)
    if not src.exists():
        raise SourceError(f"--src {src}: no such folder")
    if not src.is_dir():
        raise SourceError(f"--src {src}: not a folder")
    if not any(src.iterdir()):
        raise SourceError(f"--src {src}: the folder is empty")
    return src


def split_dir(src: Path, split: str) -> Path | None:
    for pattern in SPLIT_DIRS:
        d = src / pattern.format(split=split)
        if d.is_dir():
            return d
    return None


def looked_for(src: Path, split: str) -> str:
    return " or ".join(str(src / p.format(split=split)) for p in SPLIT_DIRS)


def _class_dirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and WNID.match(p.name))


def train_classes(src: Path) -> list[str]:
    """Sorted train wnids: label i is classes[i]."""
    d = split_dir(src, "train")
    if d is None:
        raise SourceError(f"no train folder: looked for {looked_for(src, 'train')}")
    classes = [p.name for p in _class_dirs(d)]
    if not classes:
        raise SourceError(f"no train classes in {d}: expected sub-folders named like n01440764 (a wnid)")
    return classes


def canonical(split: str, listing: Listing) -> Listing:
    """The split in the canonical order, which depends on (split, label, key) alone: train sorted by (label, key)
    (make_shards then shuffles it with its seed), val by key. Of files whose keys clash, the one whose file
    name sorts first is kept and the others are listed as skipped, so that choice is the same in every layout."""
    items, skipped, seen = [], [], {}
    for it in sorted(listing.items, key=lambda i: (i.key, i.file_name, i.label)):
        if it.key in seen:
            skipped.append({"path": it.path, "reason": f"duplicate key {it.key!r} (also {seen[it.key]})"})
            continue
        seen[it.key] = it.path
        items.append(it)
    if split == "train":
        items.sort(key=lambda i: (i.label, i.key))
    return Listing(items, listing.skipped + skipped, listing.ignored)


# A file as the listing sees it: (file name, path shown and recorded, where its bytes are if in an archive)
File = tuple[str, str, "tuple[str, int, int] | None"]


def list_classes(groups: list[tuple[str, str, list[File]]], classes: list[str]) -> Listing:
    """Items of class-grouped files, groups = [(wnid, where the group is, files)]; `canonical` orders them."""
    index = {wnid: i for i, wnid in enumerate(classes)}
    items, ignored = [], 0
    for wnid, shown, files in sorted(groups, key=lambda g: g[0]):
        if wnid not in index:
            raise SourceError(f"{shown}: class {wnid} is not one of the {len(classes)} train classes")
        for name, rel, where in files:
            if not is_image_name(name):
                ignored += 1
                continue
            items.append(Item(rel, index[wnid], sample_key(name), where))
    return Listing(items, [], ignored)


def list_flat(files: list[File], labels: dict[str, int], label_source: str) -> Listing:
    """Items of a flat folder of images labelled by {key: label}."""
    files = sorted(files, key=lambda f: f[0])
    images = [f for f in files if is_image_name(f[0])]
    items, skipped = [], []
    for name, rel, where in images:
        label = labels.get(sample_key(name))
        if label is None:
            skipped.append({"path": rel, "reason": f"no label in {label_source}"})
        else:
            items.append(Item(rel, label, sample_key(name), where))
    return Listing(items, skipped, len(files) - len(images))


def _list_class_folders(src: Path, d: Path, classes: list[str]) -> Listing:
    groups = [(cdir.name, str(cdir), [(f.name, f.relative_to(src).as_posix(), None)
                                      for f in cdir.iterdir() if f.is_file()]) for cdir in _class_dirs(d)]
    return list_classes(groups, classes)


def list_train(src: Path, classes: list[str]) -> Listing:
    d = split_dir(src, "train")
    return _list_class_folders(src, d, classes)


def list_val(src: Path, classes: list[str], val_labels: Path | None = None, devkit: Devkit | None = None) -> Listing:
    d = split_dir(src, "val")
    if d is None:
        raise SourceError(f"no val folder: looked for {looked_for(src, 'val')}")
    if _class_dirs(d):
        return _list_class_folders(src, d, classes)
    files = sorted(f for f in d.iterdir() if f.is_file())
    images = [f for f in files if is_image_name(f.name)]
    if not images:
        raise SourceError(f"{d}: no class folders and no images")
    labels, label_file = val_labels_of(src, d, classes, val_labels, devkit)
    listing = list_flat([(f.name, f.relative_to(src).as_posix(), None) for f in files], labels, Path(label_file).name)
    if not listing.items:
        raise SourceError(f"{label_file}: labels none of the {len(images)} images in {d} (wrong labels file?)")
    return listing


def val_labels_of(src: Path | None, val_dir: Path | None, classes: list[str], val_labels: Path | None,
                  devkit: Devkit | None) -> tuple[dict[str, int], str]:
    """({key: label}, where they come from) for a flat val split: --val-labels, else the devkit's ground
    truth, else a labels file found in SRC."""
    if val_labels:
        return read_val_labels(Path(val_labels), classes, devkit), str(val_labels)
    if devkit is not None and devkit.ground_truth is not None:
        return wnid_labels(devkit.val_wnids(), classes, devkit.source), devkit.source
    if src is None or val_dir is None:
        raise SourceError("the val images need labels: give the devkit (--devkit ILSVRC2012_devkit_t12.tar.gz, or "
                          "put it beside the archives) or --val-labels FILE (LOC_val_solution.csv or 'filename wnid')")
    label_file = _find_val_labels(src, val_dir)
    return read_val_labels(label_file, classes), str(label_file)


def wnid_labels(names: dict[str, str], classes: list[str], source: str) -> dict[str, int]:
    """{file name: wnid} -> {key: sorted-wnid label}."""
    index = {wnid: i for i, wnid in enumerate(classes)}
    missing = sorted({w for w in names.values() if w not in index})
    if missing:
        raise SourceError(f"{source}: val class {missing[0]} is not one of the {len(classes)} train classes "
                          f"({len(missing)} such); do the train and val sources belong together?")
    return {sample_key(name): index[w] for name, w in names.items()}


def _find_val_labels(src: Path, val_dir: Path) -> Path:
    candidates = [src / name for name in VAL_LABEL_FILES] + [val_dir / VAL_LABEL_FILES[0]]
    for c in candidates:
        if c.is_file():
            return c
    raise SourceError(
        f"{val_dir} is flat (no class folders) and no val labels were found: looked for "
        + ", ".join(str(c) for c in candidates)
        + "; pass --val-labels FILE (LOC_val_solution.csv, or lines of 'filename wnid')")


def read_val_labels(path: Path, classes: list[str], devkit: Devkit | None = None) -> dict[str, int]:
    """{key: label} from LOC_val_solution.csv, a 'filename wnid' / 'filename index' text file, or the devkit's
    ground truth (with meta.mat from `devkit` or beside the file)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"--val-labels {path}: no such file")
    index = {wnid: i for i, wnid in enumerate(classes)}
    text = path.read_text(errors="replace")
    first = text.lstrip().split("\n", 1)[0]
    if "ImageId" in first and "PredictionString" in first:
        rows = [(r["ImageId"], (r["PredictionString"] or "").split()[:1])
                for r in csv.DictReader(text.splitlines())]
        pairs = [(name, tok[0] if tok else "") for name, tok in rows]
    else:
        lines = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if lines and all(len(ln) == 1 and ln[0].isdigit() for ln in lines):
            return _ground_truth_labels(path, text, classes, devkit)
        bad = [ln for ln in lines if len(ln) < 2]
        if bad:
            raise SourceError(f"{path}: expected 'filename wnid' on every line, got {' '.join(bad[0])!r}")
        pairs = [(ln[0], ln[1]) for ln in lines]
    labels = {}
    for name, tag in pairs:
        if WNID.match(tag):
            if tag not in index:
                raise SourceError(f"{path}: {name} has class {tag}, which is not a train class")
            label = index[tag]
        elif tag.isdigit() and int(tag) < len(classes):
            label = int(tag)  # Caffe's val.txt: index into the sorted wnids
        else:
            raise SourceError(f"{path}: cannot read a label for {name!r} from {tag!r}")
        labels[sample_key(name.rsplit("/", 1)[-1])] = label
    if not labels:
        raise SourceError(f"{path}: no labels in the file")
    return labels


def _ground_truth_labels(path: Path, text: str, classes: list[str], devkit: Devkit | None) -> dict[str, int]:
    """The devkit's ground truth: line i is the ILSVRC2012_ID of ILSVRC2012_val_{i:08d}; meta.mat maps IDs."""
    if devkit is None and (path.parent / devkit_files.META).is_file():
        devkit = devkit_files.load(path.parent)
    if devkit is None:
        raise SourceError(
            f"{path}: one number per line looks like the devkit's ILSVRC2012_validation_ground_truth.txt, "
            "whose IDs (1..1000) are not sorted-wnid indices and need the devkit's meta.mat to map: put meta.mat "
            "beside it or pass --devkit (ILSVRC2012_devkit_t12.tar.gz or its folder); or use Kaggle's "
            "LOC_val_solution.csv or a 'filename wnid' file instead")
    ids = devkit_files.read_ground_truth(text, str(path))
    kit = Devkit(devkit.source, devkit.wnids, devkit.words, ids)
    return wnid_labels(kit.val_wnids(), classes, str(path))


def read_synset_mapping(path: Path) -> dict[str, str]:
    """Kaggle's LOC_synset_mapping.txt: 'n01440764 tench, Tinca tinca' per line -> {wnid: words}."""
    words = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        wnid, _, text = line.strip().partition(" ")
        if WNID.match(wnid):
            words[wnid] = text.strip()
    return words
