"""timm's WebDataset copy of ImageNet-1k (timm/imagenet-1k-wds) as downloaded, read in place.

    imagenet1k-train-{0000..1023}.tar, imagenet1k-validation-{00..63}.tar, _info.json (docs/FORMAT.md, section 2)

Each sample is `<key>.jpg` (the image), `<key>.cls` (its label, ASCII decimal) and `<key>.json`
({"filename": "<wnid>/<original file name>", "label", "width", "height"}), key = the original file stem.
The tars are not compressed, so they are indexed as the official archives are (shardkit.archives.scan reads
the headers; the small .cls and .json members are read while listing) and the workers read each image by
offset, in the canonical order. The class is the wnid in .json's filename; the .cls values are checked
against the place of that wnid in the sorted wnids (this project's class order, and TFDS's, from which timm's
copy was made) and, where they differ, the wnid wins: the summary says how many were mapped.
A tar cut short loses only its tail: the cut sample is listed as skipped, like an image that cannot be decoded.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import NamedTuple

from common.parallel import ordered_map
from common.progress import progress_bar
from shardkit import archives, sources

TAR = re.compile(r"^imagenet1k-(?P<split>train|validation)-(?P<n>\d+)\.tar$")
INFO = "_info.json"
SPLITS = {"train": "train", "validation": "val"}  # timm's split names -> ours
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


class Sample(NamedTuple):
    shown: str                       # <tar>/<key>.jpg
    name: str | None                 # the original file name (from .json), None if unknown
    wnid: str | None
    cls: int | None                  # the .cls value
    where: tuple[str, int, int] | None  # the image member's bytes
    problem: str | None = None       # why it cannot be used


def _read(fd: int, m: archives.Member) -> bytes:
    return os.pread(fd, m.size, m.offset)


def _sample(tar: Path, fd: int, key: str, members: dict[str, archives.Member]) -> Sample:
    image = next((members[e] for e in IMAGE_EXTS if e in members), None)
    shown = f"{tar.name}/{key}.{next((e for e in IMAGE_EXTS if e in members), 'jpg')}"
    where = (str(tar), image.offset, image.size) if image else None
    try:
        cls = int(_read(fd, members["cls"])) if "cls" in members else None
        meta = json.loads(_read(fd, members["json"])) if "json" in members else None
    except (ValueError, UnicodeDecodeError) as e:
        return Sample(shown, None, None, None, where, f"unreadable .cls or .json ({e})")
    filename = str(meta.get("filename", "")) if isinstance(meta, dict) else ""
    wnid = next((p for p in filename.split("/") if sources.WNID.match(p)), None)
    if image is None or not wnid:
        why = "no image member" if image is None else "no class: .json has no filename '<wnid>/<name>'"
        return Sample(shown, None, None, cls, where, why)
    return Sample(shown, filename.rsplit("/", 1)[-1], wnid, cls, where)


def scan_tar(path: str) -> tuple[list[Sample], str | None]:
    """The samples of one tar (its members grouped by key) and why it ends early, if it does."""
    tar = Path(path)
    with open(tar, "rb") as f:
        scan = archives.scan(f, 0, os.fstat(f.fileno()).st_size)
        groups: dict[str, dict[str, archives.Member]] = {}
        for m in scan.members:
            base = m.name.rsplit("/", 1)[-1]
            key, _, ext = base.partition(".")
            groups.setdefault(key, {})[ext.lower()] = m
        samples = [_sample(tar, f.fileno(), key, members) for key, members in groups.items()]
    if scan.cut_member:  # its payload is not all there: the sample it belongs to is dropped
        cut_key = scan.cut_member.rsplit("/", 1)[-1].partition(".")[0]
        samples = [s for s in samples if s.shown.rsplit("/", 1)[-1].partition(".")[0] != cut_key]
        samples.append(Sample(f"{tar.name}/{scan.cut_member}", None, None, None, None,
                              f"truncated: {tar.name} ends inside it; any samples after it are missing"))
    return samples, scan.cut


def list_split(files: list[Path], workers: int, desc: str) -> tuple[list[Sample], list[dict]]:
    """Every sample of a split's tars (indexed in `workers` processes), and the tars that end early."""
    samples, damaged = [], []
    scans = ordered_map(scan_tar, [str(p) for p in files], workers if len(files) >= archives.POOL_FROM else 1,
                        chunksize=1)
    with progress_bar(len(files), f"indexing {desc}", "tar") as bar:
        for (found, cut), path in zip(scans, files):
            bar.update()
            samples += found
            if cut and not any(s.problem and s.problem.startswith("truncated") for s in found):
                damaged.append({"path": path.name, "reason": f"truncated tar: {cut}; any later samples are missing"})
    return samples, damaged


def listing(samples: list[Sample], damaged: list[dict], classes: list[str], source: str) -> tuple[sources.Listing, int]:
    """Items labelled by the wnid of their .json, and how many .cls values differed from that label."""
    index = {w: i for i, w in enumerate(classes)}
    missing = sorted({s.wnid for s in samples if s.wnid and s.wnid not in index})
    if missing:
        raise sources.SourceError(f"{source}: class {missing[0]} is not one of the {len(classes)} train classes "
                                  f"({len(missing)} such); do the train and val tars belong together?")
    items, skipped, mapped = [], list(damaged), 0
    for s in samples:
        if s.problem:
            skipped.append({"path": s.shown, "reason": s.problem})
            continue
        label = index[s.wnid]
        mapped += s.cls != label
        items.append(sources.Item(s.shown, label, sources.sample_key(s.name), s.where, s.name))
    return sources.Listing(items, skipped, 0), mapped


def classes_of(samples: list[Sample]) -> list[str]:
    return sorted({s.wnid for s in samples if s.wnid})

