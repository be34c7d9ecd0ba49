"""make_shards straight from the official archives: byte-identity with the extracted tree, devkit labels and
class names, damaged archives, resume."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import REPO, convert, demo_val_wnids, interrupted_convert, iter_shard
from pipeline import open_dataset
from shardkit import archives, devkit
from shardkit.demo_archives import pack_official
from shardkit.demo_data import make_demo
from common.errors import DataError
from shardkit.format import index_path
from shardkit.sources import SourceError, read_val_labels


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A demo tree (broken and non-image files included) and the three official files packed from it."""
    root = tmp_path_factory.mktemp("official")
    info = make_demo(root / "tree", classes=4, train_per_class=8, val_per_class=3, seed=3)
    words = {w: f"{shape} thing, {shape}" for w, shape in zip(info["classes"], info["shapes"])}
    paths = pack_official(root / "tree", root / "download", demo_val_wnids(root / "tree"), words, seed=5)
    return root, info, words, paths


@pytest.fixture(scope="module")
def tree_shards(official, tmp_path_factory):
    root, *_ = official
    out = tmp_path_factory.mktemp("tree_shards")
    return out, convert(root / "tree", out, shard_size=10)


def shard_files(out: Path, manifest: dict) -> dict[str, bytes]:
    names = [n for s in ("train", "val") for n in manifest["splits"][s]["shards"]]
    return {**{n: (out / n).read_bytes() for n in names}, **{n + ".idx": index_path(out / n).read_bytes() for n in names}}


def labels_of(out: Path, manifest: dict, split: str) -> dict[str, int]:
    return {k: int(m["cls"]) for n in manifest["splits"][split]["shards"] for k, m in iter_shard(out / n)}


def archive_path(tree_path: str) -> str:
    """Where a file of the tree is inside the official archives."""
    parts = tree_path.split("/")
    if parts[0] == "train":
        return f"{archives.TRAIN}/{parts[1]}.tar/{parts[2]}"
    return f"{archives.VAL}/{parts[-1]}"


@pytest.mark.parametrize("how", ["src", "named"])
def test_byte_identical_to_extracted_tree(official, tree_shards, tmp_path, how):
    root, info, words, paths = official
    tree_out, tree_manifest = tree_shards
    if how == "src":  # SRC holds the three files under their official names
        manifest = convert(root / "download", tmp_path / "o", shard_size=10, workers=2)
    else:
        manifest = convert(None, tmp_path / "o", shard_size=10, train_archive=str(paths["train"]),
                           val_archive=str(paths["val"]), devkit=str(paths["devkit"]))
    assert shard_files(tmp_path / "o", manifest) == shard_files(tree_out, tree_manifest)
    assert manifest["classes"] == tree_manifest["classes"]
    for split in ("train", "val"):
        a, b = manifest["splits"][split], tree_manifest["splits"][split]
        assert (a["shards"], a["shard_samples"], a["samples"]) == (b["shards"], b["shard_samples"], b["samples"])
        assert a["ignored_files"] == b["ignored_files"]
        # the broken files are skipped and listed with their path inside the archive
        assert [(s["path"], s["reason"]) for s in a["skipped"]] == \
            [(archive_path(s["path"]), s["reason"]) for s in b["skipped"]]
    assert {s["path"] for s in manifest["splits"]["train"]["skipped"]} == \
        {archive_path(p) for p in info["broken"] if p.startswith("train/")}
    assert manifest["splits"]["train"]["source"] == str(paths["train"])


def test_val_labels_come_from_the_devkit(official, tmp_path):
    root, info, words, paths = official
    manifest = convert(root / "download", tmp_path / "o", shard_size=10)
    truth = demo_val_wnids(root / "tree")
    got = labels_of(tmp_path / "o", manifest, "val")
    assert len(got) == info["val"] == 12
    assert {k: manifest["classes"][v] for k, v in got.items()} == {k: truth[k] for k in got}
    # the devkit's IDs are not sorted-wnid indices: reading them as labels would have been wrong
    kit = devkit.load(paths["devkit"])
    assert any(kit.ground_truth[int(k[-8:]) - 1] - 1 != v for k, v in got.items())


def test_class_names_from_meta_mat(official, tmp_path, tree_shards):
    root, info, words, paths = official
    manifest = convert(root / "download", tmp_path / "o", shard_size=10, splits=("train",))
    assert manifest["class_names"] == [words[w] for w in manifest["classes"]]
    assert list(open_dataset(tmp_path / "o").class_names) == manifest["class_names"]
    assert open_dataset(tree_shards[0]).class_names is None  # a tree without devkit or synset mapping


def test_kaggle_synset_mapping_names_classes(tmp_path):
    src = tmp_path / "kaggle"
    info = make_demo(src, classes=2, train_per_class=2, val_per_class=1, layout="kaggle", odd_files=False)
    (src / "LOC_synset_mapping.txt").write_text("".join(f"{w} name {i}, other\n" for i, w in enumerate(info["classes"])))
    manifest = convert(src, tmp_path / "o", splits=("train",))
    assert manifest["class_names"] == ["name 0, other", "name 1, other"]


def test_extracted_devkit_reads_the_ground_truth(official, tmp_path):
    """A flat val tree labelled by ILSVRC2012_validation_ground_truth.txt, with meta.mat beside it or --devkit."""
    root, info, words, paths = official
    with tarfile.open(paths["devkit"]) as tar:
        tar.extractall(tmp_path / "kit", filter="data")
    data = tmp_path / "kit" / devkit.FOLDER / "data"
    classes = info["classes"]
    truth = demo_val_wnids(root / "tree")
    got = read_val_labels(data / devkit.GROUND_TRUTH, classes)  # meta.mat found beside it
    assert {k: classes[v] for k, v in got.items()} == truth
    lone = tmp_path / devkit.GROUND_TRUTH
    shutil.copy(data / devkit.GROUND_TRUTH, lone)
    with pytest.raises(SourceError, match="meta.mat"):
        read_val_labels(lone, classes)
    assert read_val_labels(lone, classes, devkit.load(tmp_path / "kit" / devkit.FOLDER)) == got
    # and a whole conversion of a tree whose val is flat, labelled only by the devkit folder
    tree = tmp_path / "tree"
    shutil.copytree(root / "tree", tree)
    (tree / "LOC_val_solution.csv").unlink()
    manifest = convert(tree, tmp_path / "o", shard_size=10, devkit=str(tmp_path / "kit"))
    assert {k: classes[v] for k, v in labels_of(tmp_path / "o", manifest, "val").items()} == \
        {k: truth[k] for k in labels_of(tmp_path / "o", manifest, "val")}


def test_bad_meta_mat_is_a_clear_error(tmp_path):
    bad = tmp_path / "kit" / "data"
    bad.mkdir(parents=True)
    (bad / devkit.META).write_bytes(b"MATLAB 5.0 MAT-file, but garbage after" + b"\x00" * 200)
    with pytest.raises(DataError, match=r"meta\.mat"):
        devkit.load(tmp_path / "kit")


def _cut(src: Path, dst: Path, at: int) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes()[:at])
    return dst


def _member_offsets(path: Path) -> list[tuple[str, int, int]]:
    with tarfile.open(path) as tar:
        return [(m.name, m.offset, m.offset_data + m.size) for m in tar]


@pytest.mark.parametrize("where", ["inside a member", "between members"])
def test_truncated_outer_tar_is_an_error_and_keeps_what_was_written(official, tmp_path, where):
    root, info, words, paths = official
    download = tmp_path / "download"
    shutil.copytree(root / "download", download)
    out = tmp_path / "o"
    convert(download, out, shard_size=10, splits=("val",))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    name, header, end = _member_offsets(paths["train"])[2]
    _cut(paths["train"], download / archives.TRAIN, end - 100 if where == "inside a member" else header)
    with pytest.raises(DataError, match=archives.TRAIN + r".*truncated.*download it again"):
        convert(download, out, shard_size=10)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_truncated_val_tar_is_an_error(official, tmp_path):
    root, info, words, paths = official
    val = _cut(paths["val"], tmp_path / archives.VAL, paths["val"].stat().st_size // 2)
    with pytest.raises(DataError, match=archives.VAL + ".*truncated"):
        convert(None, tmp_path / "o", train_archive=str(paths["train"]), val_archive=str(val), devkit=str(paths["devkit"]))


def test_truncated_inner_tar_skips_its_cut_tail(official, tmp_path):
    """An inner tar cut inside an image: the images before the cut are converted, the cut one is listed."""
    root, info, words, paths = official
    wnid = info["classes"][1]
    outer = tmp_path / archives.TRAIN
    with tarfile.open(paths["train"]) as src, tarfile.open(outer, "w", format=tarfile.GNU_FORMAT) as dst:
        for m in src:
            data = src.extractfile(m).read()
            if m.name == f"{wnid}.tar":
                members = _member_offsets_bytes(data)
                cut_name, _, cut_end = members[3]
                data = data[:cut_end - 50]
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    manifest = convert(None, tmp_path / "o", shard_size=10, splits=("train",), train_archive=str(outer))
    skipped = {s["path"]: s["reason"] for s in manifest["splits"]["train"]["skipped"]}
    cut_path = f"{archives.TRAIN}/{wnid}.tar/{cut_name}"
    assert cut_path in skipped and "truncated" in skipped[cut_path]
    keys = {k for n in manifest["splits"]["train"]["shards"] for k, _ in iter_shard(tmp_path / "o" / n)}
    in_class = sorted(k for k in keys if k.startswith(wnid))
    assert len(in_class) == 3 and all(k.startswith(f"{wnid}_") for k in in_class)  # the three before the cut
    other = info["classes"][0]
    assert sum(k.startswith(other) for k in keys) == 8  # other classes untouched (its 2 bad files skipped)


def _member_offsets_bytes(data: bytes) -> list[tuple[str, int, int]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, m.offset, m.offset_data + m.size) for m in tar]


def test_strict_names_the_archive_member(official, tmp_path):
    root, *_ = official
    with pytest.raises(DataError, match=archives.TRAIN + r"/n\d{8}\.tar/n\d{8}_900\d\.JPEG: .*\(--strict\)"):
        convert(root / "download", tmp_path / "o", strict=True)


def test_resume_from_archives_after_interruption(official, tmp_path, monkeypatch):
    root, *_ = official
    full = convert(root / "download", tmp_path / "full", shard_size=10)
    out = tmp_path / "killed"
    interrupted_convert(root / "download", out, monkeypatch, at=25, shard_size=10)  # dies in the third shard
    done = sorted(p.name for p in out.glob("train-*.tar"))
    assert done == ["train-000000.tar", "train-000001.tar"]
    stamps = {n: os.stat(out / n).st_mtime_ns for n in done}
    resumed = convert(root / "download", out, shard_size=10)
    assert {n: os.stat(out / n).st_mtime_ns for n in done} == stamps  # the archive items' fingerprints held
    assert resumed["splits"] == full["splits"]
    assert shard_files(out, resumed) == shard_files(tmp_path / "full", full)


def test_src_given_an_archive_file(official, tmp_path):
    root, info, words, paths = official
    from common.errors import ConfigError
    with pytest.raises(ConfigError, match="--train-archive"):
        convert(paths["train"], tmp_path / "o")


def test_cli_from_archives(official, tmp_path):
    root, info, words, paths = official
    r = subprocess.run([sys.executable, "tools/make_shards.py", "--src", str(root / "download"), "--out",
                        str(tmp_path / "o"), "--workers", "1", "--shard-size", "30"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    summary = next(line for line in r.stdout.splitlines() if line.startswith("done:"))
    assert "archives indexed in" in summary and "4 skipped" in summary
    cut = _cut(paths["val"], tmp_path / "cut" / archives.VAL, 3000)
    r = subprocess.run([sys.executable, "tools/make_shards.py", "--train-archive", str(paths["train"]), "--val-archive",
                        str(cut), "--devkit", str(paths["devkit"]), "--out", str(tmp_path / "o2")],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {cut}: truncated") and archives.MD5[archives.VAL] in r.stderr


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_fast_header_scan_agrees_with_tarfile(tmp_path, fmt):
    path = tmp_path / "t.tar"
    names = ["a.JPEG", "sub/b.JPEG", "d" * 60 + "/" + "x" * 60 + ".JPEG", "empty.JPEG"]
    with tarfile.open(path, "w", format=fmt) as tar:
        d = tarfile.TarInfo("sub")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        for i, name in enumerate(names):
            data = bytes([i]) * (0 if name == "empty.JPEG" else 700 * (i + 1))
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with open(path, "rb") as f:
        size = path.stat().st_size
        slow = archives._scan_tarfile(f, 0, size)
        fast = archives.scan(f, 0, size)
        plain = archives._scan_plain(f.fileno(), 0, size)
    assert fast == slow and [m.name for m in slow.members] == names and slow.cut is None
    data = path.read_bytes()
    for name, offset, size in slow.members:
        assert data[offset:offset + size] == (bytes([names.index(name)]) * size)
    # long names need a GNU or PAX extra header (the fast path hands those to tarfile); ustar splits the name
    assert (plain is None) == (fmt != tarfile.USTAR_FORMAT)
