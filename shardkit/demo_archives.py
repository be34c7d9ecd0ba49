"""Pack an ImageNet tree as the other ways ImageNet is held: the official download, Hugging Face's and timm's
copies; for tests and benchmarks (the same images in every layout).

    pack_official(Path("demo/imagenet"), Path("demo/archives"), val_wnids={"ILSVRC2012_val_00000001": "n0..."})
    pack_hf(tree, Path("demo/hf"), val_wnids, fmt="parquet")     # or fmt="tar": its earlier gzip tars
    pack_timm(tree, Path("demo/timm"), val_wnids)                 # timm/imagenet-1k-wds's WebDataset tars

writes, in the official structure:
- ILSVRC2012_img_train.tar: one `<wnid>.tar` per class folder of SRC/train, each holding that folder's files
  (all of them, non-images and broken files included, as a real class folder would);
- ILSVRC2012_img_val.tar: the val images, flat;
- ILSVRC2012_devkit_t12.tar.gz: ILSVRC2012_devkit_t12/data/meta.mat, a `synsets` struct array (ILSVRC2012_ID,
  WNID, words, gloss, num_children, children, wordnet_height, num_train_images) whose first entries are the
  leaf classes, numbered in a shuffled order as the devkit's IDs are not sorted-wnid order, followed by a few
  inner nodes; and data/ILSVRC2012_validation_ground_truth.txt, one ID per val file in name order.
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from shardkit import archives, devkit, sources

SYNSET_DTYPE = [(name, object) for name in ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
                                            "wordnet_height", "num_train_images")]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def meta_mat(classes: list[str], words: dict[str, str], seed: int = 0, inner_nodes: int = 3) -> tuple[bytes, dict[str, int]]:
    """meta.mat bytes in the devkit's structure, and the ILSVRC2012_ID given to each class."""
    from scipy.io import savemat

    order = np.random.default_rng(seed).permutation(len(classes))
    ids = {classes[j]: i + 1 for i, j in enumerate(order)}
    leaf = sorted(classes, key=ids.get)
    synsets = np.zeros((len(leaf) + inner_nodes, 1), dtype=SYNSET_DTYPE)
    for i, wnid in enumerate(leaf):
        synsets[i, 0] = (ids[wnid], wnid, words.get(wnid, wnid), f"a {wnid}", 0, np.zeros((1, 0)), 0, 1300)
    for k in range(inner_nodes):  # inner nodes of the hierarchy: not classes
        i = len(leaf) + k
        synsets[i, 0] = (i + 1, f"n{80000000 + k:08d}", f"group {k}", "a group", 2, np.array([[1, 2]]), 1, 0)
    buf = io.BytesIO()
    savemat(buf, {"synsets": synsets})
    return buf.getvalue(), ids


def pack_official(src: Path, out: Path, val_wnids: dict[str, str], words: dict[str, str] | None = None,
                  seed: int = 0) -> dict[str, Path]:
    """Write the three files from tree SRC; val_wnids = {val file stem: wnid}. Returns their paths."""
    src, out = Path(src), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train_dir = sources.split_dir(src, "train")
    classes = sources.train_classes(src)
    paths = {"train": out / archives.TRAIN, "val": out / archives.VAL, "devkit": out / devkit.ARCHIVE}
    with tarfile.open(paths["train"], "w", format=tarfile.GNU_FORMAT) as outer:
        for wnid in classes:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as inner:
                for f in sorted((train_dir / wnid).iterdir()):
                    if f.is_file():
                        _add(inner, f.name, f.read_bytes())
            _add(outer, f"{wnid}.tar", buf.getvalue())
    val_dir = sources.split_dir(src, "val")
    val_files = sorted((f for f in val_dir.rglob("*") if f.is_file()), key=lambda f: f.name) if val_dir else []
    with tarfile.open(paths["val"], "w", format=tarfile.GNU_FORMAT) as tar:
        for f in val_files:
            _add(tar, f.name, f.read_bytes())
    mat, ids = meta_mat(classes, words or {}, seed)
    truth = "".join(f"{ids[val_wnids[f.stem]]}\n" for f in val_files if sources.is_image_name(f.name))
    with tarfile.open(paths["devkit"], "w:gz") as tar:
        _add(tar, f"{devkit.FOLDER}/data/{devkit.META}", mat)
        _add(tar, f"{devkit.FOLDER}/data/{devkit.GROUND_TRUTH}", truth.encode())
        _add(tar, f"{devkit.FOLDER}/readme.txt", b"demo devkit\n")
    return paths


# ---------------------------------------------------------------- Hugging Face's and timm's copies
HF_TRAIN_TARS = 5  # train_images_{0..4}.tar.gz, as Hugging Face's loading script lists them


def _images(src: Path, val_wnids: dict[str, str]) -> dict[str, list[tuple[str, str, bytes]]]:
    """{split: [(file name, wnid, bytes)]} of the tree's images (its non-image files are left out, as the
    hubs' copies hold none), each split shuffled: the hubs' order is not the tree's."""
    src = Path(src)
    out = {"train": [], "val": []}
    for wnid in sources.train_classes(src):
        for f in sorted((sources.split_dir(src, "train") / wnid).iterdir()):
            if sources.is_image_name(f.name):
                out["train"].append((f.name, wnid, f.read_bytes()))
    val_dir = sources.split_dir(src, "val")
    for f in sorted(val_dir.rglob("*")) if val_dir else []:
        if f.is_file() and sources.is_image_name(f.name):
            out["val"].append((f.name, val_wnids[Path(f.name).stem], f.read_bytes()))
    rng = np.random.default_rng(7)
    return {split: [files[i] for i in rng.permutation(len(files))] for split, files in out.items()}


def _hf_name(name: str, wnid: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return f"{stem}_{wnid}{dot}{ext}"


def classes_py(classes: list[str], words: dict[str, str]) -> bytes:
    """classes.py as Hugging Face's ILSVRC/imagenet-1k ships it: an OrderedDict wnid -> words, in label order."""
    rows = "".join(f"        {w!r}: {words.get(w, w)!r},\n" for w in classes)
    head = "from collections import OrderedDict\n\nIMAGENET2012_CLASSES = OrderedDict(\n    {\n"
    return (head + rows + "    }\n)\n").encode()


def pack_hf(src: Path, out: Path, val_wnids: dict[str, str], words: dict[str, str] | None = None,
            fmt: str = "parquet", files: int = 2) -> Path:
    """Write tree SRC as Hugging Face's ILSVRC/imagenet-1k download: README.md, classes.py and data/ holding
    {train,validation,test}-NNNNN-of-NNNNN.parquet (fmt "parquet", today's) or train_images_{0..4}.tar.gz,
    val_images.tar.gz, test_images.tar.gz (fmt "tar", the earlier revision), images named
    <stem>_<wnid>.<ext>; one unlabelled test image. Returns OUT."""
    out = Path(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    classes = sources.train_classes(src)
    (out / "classes.py").write_bytes(classes_py(classes, words or {}))
    (out / "README.md").write_text("demo copy of ILSVRC/imagenet-1k\n")
    label = {w: i for i, w in enumerate(classes)}
    splits = {s: [(_hf_name(n, w), label[w], data) for n, w, data in rows]
              for s, rows in _images(src, val_wnids).items()}
    splits["test"] = [("ILSVRC2012_test_00000001.JPEG", -1, splits["train"][0][2])]
    for split, rows in splits.items():
        name = {"val": "validation"}.get(split, split)
        if not rows:
            continue
        if fmt == "parquet":
            n = files if split == "train" else 1
            for i in range(n):
                _write_parquet(out / "data" / f"{name}-{i:05d}-of-{n:05d}.parquet", rows[i::n])
        else:
            parts = [f"train_images_{i}" for i in range(HF_TRAIN_TARS)] if split == "train" else [f"{split}_images"]
            for i, part in enumerate(parts):
                _write_targz(out / "data" / f"{part}.tar.gz", rows[i::len(parts)])
    return out


def _write_parquet(path: Path, rows: list[tuple[str, int, bytes]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.array([{"bytes": data, "path": name} for name, _, data in rows],
                     pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"image": image, "label": pa.array([lab for _, lab, _ in rows], pa.int64())}), path,
                   row_group_size=100)  # as the datasets library writes image datasets


def _write_targz(path: Path, rows: list[tuple[str, int, bytes]]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, _, data in rows:
            _add(tar, name, data)


def pack_timm(src: Path, out: Path, val_wnids: dict[str, str], shard_size: int = 8,
              cls_of: dict[str, int] | None = None) -> Path:
    """Write tree SRC as timm's imagenet-1k-wds: imagenet1k-train-NNNN.tar and imagenet1k-validation-NN.tar of
    <key>.jpg, <key>.cls, <key>.json ({"filename": "<wnid>/<name>", "label", "width", "height"}), samples
    shuffled across the shards, and _info.json. `cls_of` = {wnid: .cls value}; default the sorted-wnid index,
    as timm's copy has it. Returns OUT."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    classes = sources.train_classes(src)
    cls_of = cls_of or {w: i for i, w in enumerate(classes)}
    info = {"name": "imagenet-1k", "splits": {}}
    for split, rows in _images(src, val_wnids).items():
        if not rows:
            continue
        name, width = ("validation", 2) if split == "val" else ("train", 4)
        chunks = [rows[i:i + shard_size] for i in range(0, len(rows), shard_size)]
        names = [f"imagenet1k-{name}-{i:0{width}d}.tar" for i in range(len(chunks))]
        for tar_name, chunk in zip(names, chunks):
            with tarfile.open(out / tar_name, "w") as tar:
                for file_name, wnid, data in chunk:
                    _add_timm_sample(tar, file_name, wnid, data, cls_of[wnid])
        info["splits"][name] = {"name": name, "filenames": names, "shard_lengths": [len(c) for c in chunks],
                                "num_samples": len(rows)}
    (out / "_info.json").write_text(json.dumps(info, indent=2))
    return out


def _add_timm_sample(tar: tarfile.TarFile, file_name: str, wnid: str, data: bytes, cls: int) -> None:
    key = file_name.rsplit(".", 1)[0]
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except Exception:  # the demo's broken files: timm's copy would not hold them, ours does to test skipping
        width = height = 0
    meta = {"filename": f"{wnid}/{file_name}", "height": height, "label": cls, "width": width}
    for ext, payload in (("cls", str(cls).encode()), ("jpg", data), ("json", json.dumps(meta).encode())):
        _add(tar, f"{key}.{ext}", payload)
