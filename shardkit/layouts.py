"""Which of the ways people hold ImageNet a --src folder is, recognized from the names of its files.

    layout = recognize(Path("/data/imagenet"), needed=("train", "val"))      # or forced="hf-parquet"
    layout.name, layout.files["val"], layout.ignored

| name       | SRC holds (docs/FORMAT.md, section 2)                                                          |
|------------|------------------------------------------------------------------------------------------------|
| tree       | train/<wnid>/*.JPEG and val/ (class folders, or flat with its labels)                          |
| kaggle     | ILSVRC/Data/CLS-LOC/{train,val}/ (+ LOC_val_solution.csv, LOC_synset_mapping.txt)              |
| official   | ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar (+ ILSVRC2012_devkit_t12.tar.gz)              |
| hf-parquet | [data/]{train,validation}-NNNNN-of-NNNNN.parquet (+ classes.py): Hugging Face's ILSVRC/imagenet-1k |
| hf-tar     | [data/]train_images_{0..4}.tar.gz, val_images.tar.gz (+ classes.py): that dataset's earlier revision |
| timm-wds   | imagenet1k-train-NNNN.tar, imagenet1k-validation-NN.tar (+ _info.json): timm/imagenet-1k-wds   |

One layout must be present: two are ambiguous (--layout chooses), and a layout must be whole for the splits
asked (the train split is always needed: the classes come from it). Either is an error that names the files
expected. Whatever else SRC holds is listed as ignored.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ConfigError
from shardkit import archives, devkit, hf, sources, timm_wds

NAMES = ("tree", "kaggle", "official", "hf-parquet", "hf-tar", "timm-wds")
PARQUET = re.compile(r"^(?P<split>train|validation|test)-(?P<n>\d{5})-of-(?P<of>\d{5})\.parquet$")
TARGZ = re.compile(r"^(?:train_images_(?P<n>\d+)|(?P<split>val|test)_images)\.tar\.gz$")
HF_TRAIN_TARS = 5  # train_images_{0..4}.tar.gz, as the loading script imagenet-1k.py lists them
LABEL_FILES = (*sources.VAL_LABEL_FILES, "LOC_synset_mapping.txt", devkit.ARCHIVE, devkit.FOLDER)
EXPECTED = {
    "tree": "train/<wnid>/*.JPEG and val/",
    "kaggle": "ILSVRC/Data/CLS-LOC/train/ and val/",
    "official": f"{archives.TRAIN}, {archives.VAL} and {devkit.ARCHIVE}",
    "hf-parquet": "data/train-00000-of-NNNNN.parquet ... and data/validation-00000-of-NNNNN.parquet ...",
    "hf-tar": "data/train_images_0.tar.gz ... train_images_4.tar.gz and data/val_images.tar.gz",
    "timm-wds": "imagenet1k-train-0000.tar ... and imagenet1k-validation-00.tar ...",
}
TITLES = {"tree": "an extracted ImageNet tree", "kaggle": "Kaggle's ImageNet (ILSVRC/Data/CLS-LOC)",
          "official": "the official ILSVRC2012 files, read in place",
          "hf-parquet": "Hugging Face's ILSVRC/imagenet-1k, parquet, streamed",
          "hf-tar": "Hugging Face's ILSVRC/imagenet-1k, gzip tars (its earlier revision), streamed",
          "timm-wds": "timm's imagenet-1k-wds WebDataset tars, read in place"}


@dataclass
class Layout:
    name: str
    files: dict[str, list[Path]]            # split -> its files (a tree: its folder)
    used: set[str]                          # what it reads, relative to SRC
    missing: dict[str, list[str]] = field(default_factory=dict)  # split -> files its numbering expects
    ignored: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return TITLES[self.name]


def _rel(src: Path, p: Path) -> str:
    return p.relative_to(src).as_posix()


def _extras(src: Path, names) -> set[str]:
    return {n for n in names if (src / n).exists()}


def _tree(src: Path) -> Layout | None:
    dirs = {s: sources.split_dir(src, s) for s in ("train", "val")}
    if not any(dirs.values()):
        return None
    kaggle = any(d is not None and "CLS-LOC" in d.as_posix() for d in dirs.values())
    used = {_rel(src, d) for d in dirs.values() if d} | _extras(src, LABEL_FILES)
    return Layout("kaggle" if kaggle else "tree", {s: [d] for s, d in dirs.items() if d}, used)


def _official(src: Path) -> Layout | None:
    files = {s: [src / n] for s, n in (("train", archives.TRAIN), ("val", archives.VAL)) if (src / n).is_file()}
    if not files:
        return None
    return Layout("official", files, {p.name for fs in files.values() for p in fs} | _extras(src, LABEL_FILES))


def _data_dirs(src: Path) -> list[Path]:
    return [d for d in (src / "data", src) if d.is_dir()]


def _hf_parquet(src: Path) -> Layout | None:
    files: dict[str, list[Path]] = {}
    missing: dict[str, list[str]] = {}
    for d in _data_dirs(src):
        found = [(p, m) for p in sorted(d.iterdir()) if (m := PARQUET.match(p.name)) and m["split"] != "test"]
        for split in ("train", "validation"):
            mine = [(p, m) for p, m in found if m["split"] == split]
            if mine and not files.get(hf_split(split)):
                have, of = {int(m["n"]) for _, m in mine}, int(mine[0][1]["of"])
                files[hf_split(split)] = [p for p, _ in mine]
                missing[hf_split(split)] = [f"{_rel(src, d / f'{split}-{i:05d}-of-{of:05d}.parquet')}"
                                            for i in range(of) if i not in have]
    if not files:
        return None
    used = {_rel(src, p) for fs in files.values() for p in fs} | _extras(src, (hf.CLASSES, *LABEL_FILES))
    return Layout("hf-parquet", files, used, missing)


def hf_split(name: str) -> str:
    return "val" if name in ("validation", "val") else name


def _hf_tar(src: Path) -> Layout | None:
    for d in _data_dirs(src):
        found = {p.name: p for p in sorted(d.iterdir()) if TARGZ.match(p.name)}
        train = [found[f"train_images_{i}.tar.gz"] for i in range(HF_TRAIN_TARS) if f"train_images_{i}.tar.gz" in found]
        if not train and "val_images.tar.gz" not in found:
            continue
        files = {s: fs for s, fs in (("train", train), ("val", [found.get("val_images.tar.gz")])) if fs and fs[0]}
        expected = {"train": [f"train_images_{i}.tar.gz" for i in range(HF_TRAIN_TARS)], "val": ["val_images.tar.gz"]}
        missing = {s: [_rel(src, d / n) for n in names if n not in found] for s, names in expected.items()}
        used = {_rel(src, p) for fs in files.values() for p in fs} | _extras(src, (hf.CLASSES, *LABEL_FILES))
        return Layout("hf-tar", files, used, missing)
    return None


def _timm(src: Path) -> Layout | None:
    found = [(p, m) for p in sorted(src.iterdir()) if (m := timm_wds.TAR.match(p.name))]
    if not found:
        return None
    listed = _timm_info(src)
    files, missing = {}, {}
    for name, split in timm_wds.SPLITS.items():
        mine = {p.name: p for p, m in found if m["split"] == name}
        width = max((len(m["n"]) for p, m in found if m["split"] == name), default=4)
        count = max((int(m["n"]) + 1 for p, m in found if m["split"] == name), default=0)
        expected = listed.get(name) or [f"imagenet1k-{name}-{i:0{width}d}.tar" for i in range(count)]
        files[split] = [mine[n] for n in expected if n in mine]
        missing[split] = [n for n in expected if n not in mine]
    used = {_rel(src, p) for fs in files.values() for p in fs} | _extras(src, (timm_wds.INFO, *LABEL_FILES))
    return Layout("timm-wds", {s: fs for s, fs in files.items() if fs}, used, missing)


def _timm_info(src: Path) -> dict[str, list[str]]:
    """The shard names _info.json lists per split (what timm's reader_wds reads), {} without one."""
    try:
        info = json.loads((src / timm_wds.INFO).read_text())
        return {name: list(s["filenames"]) for name, s in info.get("splits", {}).items() if s.get("filenames")}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return {}


DETECTORS = (_tree, _official, _hf_parquet, _hf_tar, _timm)


def recognize(src: Path, needed: tuple[str, ...], forced: str | None = None, classes: bool = True) -> Layout:
    """The one layout of SRC, whole for the `needed` splits and, when it must name the `classes`, for train
    (a Hugging Face download's classes.py names them too); what else SRC holds is in `ignored`."""
    present = [layout for detect in DETECTORS if (layout := detect(src)) is not None]
    if forced:
        if forced not in NAMES:
            raise ConfigError(f"--layout {forced}: unknown; use one of {', '.join(NAMES)}")
        chosen = [lay for lay in present if lay.name == forced]
        if not chosen:
            raise sources.SourceError(f"--layout {forced}: {src} holds none of its files (expected {EXPECTED[forced]})")
        present = chosen
    if not present:
        raise sources.SourceError(f"{src}: no ImageNet layout found; expected one of: "
                                  + "; ".join(f"{EXPECTED[n]} ({n})" for n in NAMES))
    if len(present) > 1:
        found = "; ".join(f"{lay.name}: {', '.join(sorted(lay.used)[:3])}" for lay in present)
        raise sources.SourceError(f"{src}: holds more than one ImageNet layout ({found}); choose one with "
                                  f"--layout {' or --layout '.join(lay.name for lay in present)}, or give --src a "
                                  "folder holding one")
    layout = present[0]
    own_classes = layout.name.startswith("hf-") and (src / hf.CLASSES).is_file()
    need_train = classes and not own_classes and "train" not in needed
    _check_whole(src, layout, ("train", *needed) if need_train else needed)
    layout.ignored = _ignored(src, layout.used)
    return layout


def _check_whole(src: Path, layout: Layout, needed: tuple[str, ...]) -> None:
    if layout.name in ("tree", "kaggle") and layout.files.get("train"):
        sources.train_classes(src)  # a train folder without class folders says so before anything else
    for split in needed:
        why = " (the classes come from the train split)" if split == "train" else ""
        if not layout.files.get(split):
            if layout.name in ("tree", "kaggle"):
                raise sources.SourceError(f"no {split} folder: looked for {sources.looked_for(src, split)}{why}")
            raise sources.SourceError(f"{src}: {layout.title}, but no {split} files{why}; expected "
                                      f"{EXPECTED[layout.name]}, or leave the split out with --splits")
        missing = layout.missing.get(split)
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise sources.SourceError(f"{src}: {layout.title}, incomplete: {split} files missing: "
                                      f"{', '.join(missing[:5])}{more}; download them "
                                      f"(expected {EXPECTED[layout.name]})")


def _ignored(src: Path, used: set[str]) -> list[str]:
    """Entries of SRC the layout does not read; folders that hold something it reads are looked into."""
    out: list[str] = []

    def walk(folder: Path, rel: str) -> None:
        for p in sorted(folder.iterdir()):
            r = rel + p.name
            if r in used:
                continue
            if p.is_dir() and any(u.startswith(r + "/") for u in used):
                walk(p, r + "/")
            else:
                out.append(r + ("/" if p.is_dir() else ""))
    walk(src, "")
    return out


def describe(src: Path, layout: Layout, limit: int = 12) -> list[str]:
    """The lines make_shards prints: the layout found, and what it ignores."""
    kind = "folder" if layout.name in ("tree", "kaggle") else "file"
    splits = ", ".join(f"{s}: {len(fs)} {kind}{'s' if len(fs) > 1 else ''}"
                       for s, fs in sorted(layout.files.items(), reverse=True))
    lines = [f"layout: {layout.name}, {layout.title} ({splits})"]
    if layout.ignored:
        more = f" and {len(layout.ignored) - limit} more" if len(layout.ignored) > limit else ""
        lines.append(f"ignored in {src}: {', '.join(layout.ignored[:limit])}{more}")
    return lines
