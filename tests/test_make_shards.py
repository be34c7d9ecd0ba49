"""tools/make_shards.py: round trip, geometry, odd files, layouts, determinism, resume, errors."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, convert, interrupted_convert, iter_shard, read_manifest
from shardkit import imaging
from shardkit.demo_data import make_demo
from common.errors import DataError
from shardkit.format import index_path, read_index
from shardkit.sources import SourceError, read_val_labels


def all_samples(out: Path, split: str) -> dict[str, dict[str, bytes]]:
    manifest = read_manifest(out)
    samples = {}
    for name in manifest["splits"][split]["shards"]:
        for key, members in iter_shard(out / name):
            assert key not in samples, f"duplicate key {key}"
            samples[key] = members
    return samples


def is_baseline_jpeg(data: bytes) -> bool:
    """SOF0 (baseline) present, SOF2 (progressive) absent, in the marker segments before the scan."""
    i, markers = 2, set()
    while i < len(data) - 4 and data[i] == 0xFF:
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        markers.add(marker)
        if marker == 0xDA:
            break
        i += 2 + length
    return 0xC0 in markers and 0xC2 not in markers


def test_round_trip(demo_tree, demo_shards):
    info = json.loads((demo_tree / "demo.json").read_text())
    manifest = read_manifest(demo_shards)
    assert manifest["classes"] == info["classes"] and manifest["size"] == 256
    for split in ("train", "val"):
        samples = all_samples(demo_shards, split)
        entry = manifest["splits"][split]
        assert entry["samples"] == len(samples) == sum(entry["shard_samples"])
        # every good source image is there once, with the label of its folder / of the csv
        broken = {p for p in info["broken"] if p.startswith(split) or f"/{split}/" in p}
        assert len(samples) == info[split]
        assert {s["path"] for s in entry["skipped"]} == broken
        for s in entry["skipped"]:
            assert s["reason"]
        for key, members in samples.items():
            img = Image.open(io.BytesIO(members["jpg"]))
            assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (256, 256))
            assert is_baseline_jpeg(members["jpg"])
            label = int(members["cls"].decode())
            assert members["cls"] == str(label).encode()
            if split == "train":
                assert info["classes"][label] == key.split("_")[0]
    csv = (demo_tree / "LOC_val_solution.csv").read_text().splitlines()[1:]
    truth = {row.split(",")[0]: row.split(",")[1].split()[0] for row in csv}
    for key, members in all_samples(demo_shards, "val").items():
        assert manifest["classes"][int(members["cls"])] == truth[key]


def test_non_images_ignored_and_counted(demo_tree, demo_shards):
    entry = read_manifest(demo_shards)["splits"]["train"]
    assert entry["ignored_files"] == 2  # .DS_Store and notes.txt
    assert not any(".DS_Store" in s["path"] or "notes" in s["path"] for s in entry["skipped"])


def test_index_points_at_members(demo_shards):
    tar = demo_shards / read_manifest(demo_shards)["splits"]["train"]["shards"][0]
    index = read_index(index_path(tar))
    data = tar.read_bytes()
    with tarfile.open(tar) as t:
        members = {m.name: (m, t.extractfile(m).read()) for m in t.getmembers()}
    assert len(index) * 2 == len(members)
    for key, exts in index:
        for ext, (offset, size) in exts.items():
            m, payload = members[f"{key}.{ext}"]
            assert (m.offset_data, m.size) == (offset, size)
            assert data[offset:offset + size] == payload
    key, exts = index[0]
    off, size = exts["cls"]
    assert data[off:off + size].decode().isdigit()


def test_train_is_shuffled_and_val_sorted(demo_shards):
    train_keys = list(all_samples(demo_shards, "train"))
    assert train_keys != sorted(train_keys)
    val_keys = list(all_samples(demo_shards, "val"))
    assert val_keys == sorted(val_keys)


def reference_geometry(img: np.ndarray, size: int = 256) -> np.ndarray:
    """Independent reference: Pillow resize of the same central square (LANCZOS)."""
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return np.asarray(Image.fromarray(img).resize((size, size), Image.LANCZOS, box=(left, top, left + s, top + s)))


def resize_then_crop(img: np.ndarray, size: int = 256) -> np.ndarray:
    """The textbook recipe: shorter side to 256, then the central 256x256."""
    h, w = img.shape[:2]
    s = size / min(h, w)
    im = Image.fromarray(img).resize((max(size, round(w * s)), max(size, round(h * s))), Image.LANCZOS)
    W, H = im.size
    left, top = (W - size) // 2, (H - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)))


@pytest.mark.parametrize("w,h", [(700, 400), (300, 900), (180, 120), (256, 256), (1100, 2300)])
def test_geometry_matches_reference(w, h):
    # a smooth, position-coded picture: red grows with x, green with y, so a shift or a stretch shows up
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([255 * x / w, 255 * y / h, 128 + 60 * np.sin(x / 25.0) * np.cos(y / 31.0)], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=98)
    out = np.asarray(Image.open(io.BytesIO(imaging.convert(buf.getvalue(), 256, 95))))
    assert out.shape == (256, 256, 3)
    src = np.asarray(Image.open(buf))
    assert np.abs(out.astype(float) - reference_geometry(src)).mean() < 2.0
    assert np.abs(out.astype(float) - resize_then_crop(src)).mean() < 3.0
    # no stretch: red spans the visible fraction of the width (the centre crop keeps min(w,h)/w of it)
    visible = min(w, h) / w
    assert abs((out[:, -1, 0].mean() - out[:, 0, 0].mean()) / 255 - visible) < 0.03


def test_odd_files_become_rgb(demo_tree, demo_shards):
    info = json.loads((demo_tree / "demo.json").read_text())
    samples = {**all_samples(demo_shards, "train"), **all_samples(demo_shards, "val")}
    kinds = set()
    for rel, kind in info["odd"].items():
        kinds.add(kind)
        key = Path(rel).stem
        out = np.asarray(Image.open(io.BytesIO(samples[key]["jpg"])))
        assert out.shape == (256, 256, 3)
        src = Image.open(demo_tree / rel)
        expected = reference_geometry(np.asarray(src.convert("RGB")))
        assert np.abs(out.astype(float) - expected).mean() < 6.0, (rel, kind)
    assert kinds == {"cmyk", "gray", "png_named_jpeg", "palette_png", "rgba_png"}


def test_cmyk_colours_survive():
    """An orange CMYK JPEG stays orange (no inverted or swapped channels)."""
    rgb = Image.new("RGB", (300, 280), (230, 120, 20))
    buf = io.BytesIO()
    rgb.convert("CMYK").save(buf, "JPEG", quality=95)
    out = np.asarray(Image.open(io.BytesIO(imaging.convert(buf.getvalue()))))
    assert np.abs(out.reshape(-1, 3).mean(0) - [230, 120, 20]).max() < 8


@pytest.mark.parametrize("data,why", [(b"", "empty"), (b"\x00" * 100, "unknown format"),
                                      (b"\xff\xd8\xff\xe0" + b"\x00" * 50, "")])
def test_bad_bytes_raise_bad_image(data, why):
    with pytest.raises(imaging.BadImage) as e:
        imaging.convert(data)
    assert why in str(e.value) and str(e.value)


def test_truncated_jpeg_is_bad():
    buf = io.BytesIO()
    Image.new("RGB", (400, 300), (10, 200, 30)).save(buf, "JPEG")
    with pytest.raises(imaging.BadImage, match="truncated"):
        imaging.convert(buf.getvalue()[: len(buf.getvalue()) // 2])


@pytest.mark.parametrize("layout,val_layout", [("kaggle", "csv"), ("imagenet", "folders"), ("imagenet", "txt")])
def test_source_layouts(tmp_path, layout, val_layout):
    src = tmp_path / "src"
    info = make_demo(src, classes=3, train_per_class=4, val_per_class=3, seed=1, layout=layout,
                     val_layout=val_layout, odd_files=False)
    kw = {"val_labels": str(src / "val_labels.txt")} if val_layout == "txt" else {}
    manifest = convert(src, tmp_path / "out", **kw)
    assert manifest["splits"]["train"]["samples"] == info["train"] == 12
    assert manifest["splits"]["val"]["samples"] == info["val"] == 9
    # every val image has the label its source gives it, whatever the layout
    if val_layout == "csv":
        rows = (src / "LOC_val_solution.csv").read_text().splitlines()[1:]
        truth = {row.split(",")[0]: row.split(",")[1].split()[0] for row in rows}
    elif val_layout == "txt":
        pairs = (line.split() for line in (src / "val_labels.txt").read_text().splitlines())
        truth = {Path(name).stem: wnid for name, wnid in pairs}
    else:
        truth = {f.stem: d.name for d in (src / "val").iterdir() for f in d.iterdir()}
    got = {key: manifest["classes"][int(m["cls"])] for key, m in all_samples(tmp_path / "out", "val").items()}
    assert len(truth) == 9 and len(set(truth.values())) > 1  # a mix of classes, so a wrong mapping shows
    assert got == truth


def test_caffe_style_index_labels(tmp_path):
    labels = tmp_path / "val.txt"
    labels.write_text("ILSVRC2012_val_00000001.JPEG 2\nILSVRC2012_val_00000002.JPEG n00000001\n")
    got = read_val_labels(labels, ["n00000000", "n00000001", "n00000002"])
    assert got == {"ILSVRC2012_val_00000001": 2, "ILSVRC2012_val_00000002": 1}


def test_devkit_ground_truth_is_refused(tmp_path):
    gt = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    gt.write_text("490\n361\n171\n")
    with pytest.raises(SourceError, match="devkit"):
        read_val_labels(gt, ["n00000000"])


def test_deterministic_across_workers(demo_tree, tmp_path):
    a = convert(demo_tree, tmp_path / "w1", workers=1, shard_size=17)
    b = convert(demo_tree, tmp_path / "w2", workers=2, shard_size=17)
    assert a["splits"]["train"]["shards"] == b["splits"]["train"]["shards"]
    for split in ("train", "val"):
        for name in a["splits"][split]["shards"]:
            assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name
            assert index_path(tmp_path / "w1" / name).read_text() == index_path(tmp_path / "w2" / name).read_text()
    c = convert(demo_tree, tmp_path / "seed1", workers=1, shard_size=17, seed=1)
    assert (tmp_path / "seed1" / "train-000000.tar").read_bytes() != (tmp_path / "w1" / "train-000000.tar").read_bytes()
    assert c["splits"]["train"]["samples"] == a["splits"]["train"]["samples"]


def test_resume_after_interruption(demo_tree, tmp_path, monkeypatch):
    full = convert(demo_tree, tmp_path / "full", shard_size=10)
    out = tmp_path / "killed"
    interrupted_convert(demo_tree, out, monkeypatch, at=25, shard_size=10)  # dies in the third shard
    done = sorted(p.name for p in out.glob("train-*.tar"))
    assert done == ["train-000000.tar", "train-000001.tar"]  # no half-written shard under a final name
    assert not list(out.glob(".*.partial"))
    stamps = {n: os.stat(out / n).st_mtime_ns for n in done}
    resumed = convert(demo_tree, out, shard_size=10)
    assert {n: os.stat(out / n).st_mtime_ns for n in done} == stamps  # finished shards kept, not rewritten
    assert resumed["splits"] == full["splits"]
    for name in full["splits"]["train"]["shards"] + full["splits"]["val"]["shards"]:
        assert (out / name).read_bytes() == (tmp_path / "full" / name).read_bytes()
    # a re-run with other options redoes exactly the shards whose bytes would change
    again = convert(demo_tree, out, shard_size=10, quality=70)
    assert (out / "train-000000.tar").read_bytes() != (tmp_path / "full" / "train-000000.tar").read_bytes()
    assert again["quality"] == 70


def test_val_split_alone_keeps_train(demo_tree, tmp_path):
    convert(demo_tree, tmp_path / "o", splits=("train",))
    manifest = convert(demo_tree, tmp_path / "o", splits=("val",))
    assert set(manifest["splits"]) == {"train", "val"}


def test_strict_stops_on_bad_file(demo_tree, tmp_path):
    with pytest.raises(DataError, match=r"n9000000\d_900\d\.JPEG: .* \(--strict\)"):
        convert(demo_tree, tmp_path / "strict", strict=True)


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "tools/make_shards.py", *args], cwd=cwd, capture_output=True, text=True)


def test_cli_errors(tmp_path, demo_tree):
    r = run_cli("--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "no such folder" in r.stderr
    (tmp_path / "empty").mkdir()
    r = run_cli("--src", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "empty" in r.stderr
    (tmp_path / "notrain" / "val").mkdir(parents=True)
    r = run_cli("--src", str(tmp_path / "notrain"), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "no train folder" in r.stderr and "ILSVRC/Data/CLS-LOC/train" in r.stderr
    (tmp_path / "noclass" / "train" / "cats").mkdir(parents=True)
    r = run_cli("--src", str(tmp_path / "noclass"), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "no train classes" in r.stderr
    # flat val without any labels file
    src = tmp_path / "nolabels"
    make_demo(src, classes=2, train_per_class=2, val_per_class=2, odd_files=False)
    (src / "LOC_val_solution.csv").unlink()
    r = run_cli("--src", str(src), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "LOC_val_solution.csv" in r.stderr and "--val-labels" in r.stderr
    # an output folder that cannot be written: a file stands where the folder should be
    (tmp_path / "afile").write_text("x")
    r = run_cli("--src", str(demo_tree), "--out", str(tmp_path / "afile" / "shards"))
    assert r.returncode != 0 and "cannot write" in r.stderr


def test_cli_summary_line(demo_tree, tmp_path):
    r = run_cli("--src", str(demo_tree), "--out", str(tmp_path / "o"), "--workers", "2", "--shard-size", "30")
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()
    summary = next(line for line in last if line.startswith("done:"))
    assert "images/s" in summary and "4 skipped" in summary and "shards" in summary
    again = run_cli("--src", str(demo_tree), "--out", str(tmp_path / "o"), "--shard-size", "30")
    assert "already done, kept" in again.stdout and "0 converted this run" in again.stdout


def test_shard_with_only_broken_files_is_left_out(tmp_path):
    src = tmp_path / "src"
    make_demo(src, classes=2, train_per_class=3, val_per_class=2, seed=2)
    # val: 4 good images then 1 truncated one; shard size 4 puts the broken one alone in the 2nd shard
    manifest = convert(src, tmp_path / "o", shard_size=4)
    val = manifest["splits"]["val"]
    assert val["shards"] == ["val-000000.tar"] and val["samples"] == 4 and len(val["skipped"]) == 1
    assert not (tmp_path / "o" / "val-000001.tar").exists()
    again = convert(src, tmp_path / "o", shard_size=4)  # and a re-run knows that shard is done
    assert again["splits"]["val"] == val


def test_split_without_images_is_an_error(tmp_path):
    for wnid in ("n01440764", "n01443537"):
        (tmp_path / "src" / "train" / wnid).mkdir(parents=True)
        (tmp_path / "src" / "train" / wnid / "readme.txt").write_text("no images here")
    r = run_cli("--src", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--splits", "train")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"error: {tmp_path / 'src' / 'train'}: no convertible image in the train split (no image files, " \
           f"2 other files" in r.stderr, r.stderr


def test_reshard_removes_shards_the_manifest_no_longer_lists(demo_tree, tmp_path):
    out = tmp_path / "o"
    r = run_cli("--src", str(demo_tree), "--out", str(out), "--shard-size", "10", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert len(list(out.glob("train-*.tar"))) == 6  # 56 train images
    r = run_cli("--src", str(demo_tree), "--out", str(out), "--shard-size", "30", "--workers", "1")
    assert r.returncode == 0, r.stderr
    manifest = read_manifest(out)
    for split in ("train", "val"):
        on_disk = sorted(p.name for p in out.glob(f"{split}-*.tar"))
        assert on_disk == manifest["splits"][split]["shards"]
        assert sorted(p.name for p in out.glob(f"{split}-*.idx")) == [n[:-4] + ".idx" for n in on_disk]
    assert sorted(p.name for p in (out / ".make_shards").iterdir()) == \
        sorted(["conversion.json"] + [f"{n}.json" for s in ("train", "val") for n in manifest["splits"][s]["shards"]])
    assert "5 shards of an earlier run not in the manifest removed" in r.stdout  # 6 -> 2 train, 2 -> 1 val


def test_piped_output_has_no_bars_and_lists_skipped_files_once(demo_tree, tmp_path):
    r = subprocess.run([sys.executable, "tools/make_shards.py", "--src", str(demo_tree), "--out", str(tmp_path / "o"),
                        "--workers", "1"], cwd=REPO, capture_output=True)  # bytes: text mode would turn \r into \n
    assert r.returncode == 0, r.stderr
    assert b"\r" not in r.stdout + r.stderr
    text = (r.stdout + r.stderr).decode()
    skipped = [line for line in text.splitlines() if line.strip().startswith("skipped ")]
    assert len(skipped) == 4 and len(set(skipped)) == 4, text
