"""Pack an ImageNet tree into the three files of the official download, for tests and benchmarks.

    pack_official(Path("demo/imagenet"), Path("demo/archives"), val_wnids={"ILSVRC2012_val_00000001": "n0..."})

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
import tarfile
from pathlib import Path

import numpy as np

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
