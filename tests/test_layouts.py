"""Every way people hold ImageNet gives the same shards: one demo written in every layout, converted with 1 and
2 workers; layout recognition, ambiguous and half-present layouts; the hubs' specifics (classes.py never run,
timm's .cls checked, gzip read in one bounded pass); the format version the readers check."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import ConfigError, DataError
from pipeline import open_dataset
from shardkit import devkit, hf, stats as compute_pca, stream
from shardkit.demo_archives import pack_hf, pack_official, pack_timm
from shardkit.demo_data import make_demo
from shardkit.format import MANIFEST, PCA, index_path
from shardkit.sources import SourceError
from tests.conftest import REPO, convert, demo_val_wnids, interrupted_convert, iter_shard, read_manifest

LAYOUTS = ("official", "flat-devkit", "class-folders", "kaggle", "hf-parquet", "hf-tar", "timm-wds")
BROKEN = 4  # the demo's empty, truncated and garbage train files and its truncated val file


def _tree_variant(tree: Path, out: Path, val_wnids: dict[str, str], kind: str, kit: Path) -> Path:
    """The demo tree (flat val + LOC_val_solution.csv) rearranged as another extracted layout."""
    if kind == "kaggle":
        shutil.copytree(tree / "train", out / "ILSVRC/Data/CLS-LOC/train")
        shutil.copytree(tree / "val", out / "ILSVRC/Data/CLS-LOC/val")
        shutil.copy(tree / "LOC_val_solution.csv", out)
        return out
    shutil.copytree(tree, out)
    (out / "LOC_val_solution.csv").unlink()
    if kind == "flat-devkit":  # val labelled by the devkit found in SRC
        shutil.copy(kit, out / devkit.ARCHIVE)
    else:  # val sorted into class folders, as the usual valprep.sh leaves it
        for f in sorted((out / "val").iterdir()):
            (out / "val" / val_wnids[f.stem]).mkdir(exist_ok=True)
            f.rename(out / "val" / val_wnids[f.stem] / f.name)
    return out


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Path]:
    """One demo (broken and odd files included) written in the tree layout and in every other layout."""
    root = tmp_path_factory.mktemp("layouts")
    info = make_demo(root / "tree", classes=3, train_per_class=5, val_per_class=2, seed=3)
    val_wnids = demo_val_wnids(root / "tree")
    words = {w: f"{shape} thing" for w, shape in zip(info["classes"], info["shapes"])}
    official = pack_official(root / "tree", root / "official", val_wnids, words)
    found = {"tree": root / "tree", "official": root / "official"}
    for kind in ("flat-devkit", "class-folders", "kaggle"):
        found[kind] = _tree_variant(root / "tree", root / kind, val_wnids, kind, official["devkit"])
    found["hf-parquet"] = pack_hf(root / "tree", root / "hf-parquet", val_wnids, words, fmt="parquet")
    found["hf-tar"] = pack_hf(root / "tree", root / "hf-tar", val_wnids, words, fmt="tar")
    found["timm-wds"] = pack_timm(root / "tree", root / "timm-wds", val_wnids, shard_size=4)
    return found


@pytest.fixture(scope="module")
def converted(layouts, tmp_path_factory):
    """converted(layout, workers) -> (shards folder, manifest), each made once, with its pca.json."""
    done = {}

    def get(layout: str, workers: int):
        if (layout, workers) not in done:
            out = tmp_path_factory.mktemp(f"{layout}-w{workers}")
            manifest = convert(layouts[layout], out, shard_size=7, workers=workers)
            compute_pca.compute(compute_pca.Options(shards=str(out), workers=1))
            done[layout, workers] = out, manifest
        return done[layout, workers]
    return get


def fingerprint(out: Path, manifest: dict) -> dict:
    """What must not depend on the layout: every shard's and index's bytes, the manifest's digests, pca.json."""
    files = {}
    for split in ("train", "val"):
        for name in manifest["splits"][split]["shards"]:
            files[name] = (out / name).read_bytes()
            files[index_path(Path(name)).name] = index_path(out / name).read_bytes()
    digests = {s: {k: manifest["splits"][s][k] for k in ("shards", "shard_samples", "shard_sha256",
                                                          "shard_index_sha256", "samples")}
               for s in ("train", "val")}
    pca = json.loads((out / PCA).read_text())
    return {"files": files, "digests": digests, "classes": manifest["classes"],
            "pca": {k: pca[k] for k in ("mean", "std", "cov", "eigval", "eigvec", "images", "pixels")}}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("workers", [1, 2])
def test_every_layout_gives_the_tree_s_shards_byte_for_byte(converted, layout, workers):
    expected = fingerprint(*converted("tree", 1))
    got = fingerprint(*converted(layout, workers))
    assert got["digests"] == expected["digests"] and got["pca"] == expected["pca"]
    assert got["files"] == expected["files"] and got["classes"] == expected["classes"]
    assert len(expected["files"]) == 8  # 3 train + 1 val shards, each with its index: a real comparison


@pytest.mark.parametrize("layout", ("tree",) + LAYOUTS)
def test_damaged_members_are_skipped_and_listed_in_every_layout(converted, layout):
    _, manifest = converted(layout, 1)
    skipped = [s for split in ("train", "val") for s in manifest["splits"][split]["skipped"]]
    assert len(skipped) == BROKEN and all(s["reason"] for s in skipped)
    assert {Path(s["path"]).name.split("_n9")[0].rsplit(".", 1)[0] for s in skipped} == \
        {"n90000000_9001", "n90000001_9002", "n90000002_9003", "ILSVRC2012_val_00000007"}


def test_class_folder_val_is_in_the_canonical_order(converted):
    """The bug of issue 20: val sorted into class folders used to be listed class by class."""
    out, manifest = converted("class-folders", 1)
    keys = [k for name in manifest["splits"]["val"]["shards"] for k, _ in iter_shard(out / name)]
    assert keys == sorted(keys) and len(keys) == 6


def test_hub_layouts_name_the_classes(converted):
    assert converted("hf-parquet", 1)[1]["class_names"] == ["circle thing", "square thing", "triangle thing"]
    assert converted("official", 1)[1]["class_names"] == converted("hf-tar", 1)[1]["class_names"]
    assert "class_names" not in converted("timm-wds", 1)[1]  # timm's copy names none; a --devkit would


def run_make_shards(*args):
    return subprocess.run([sys.executable, "tools/make_shards.py", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True)


@pytest.mark.parametrize("layout,ignored", [("hf-parquet", "README.md, data/test-00000-of-00001.parquet"),
                                            ("hf-tar", "README.md, data/test_images.tar.gz"),
                                            ("official", None), ("kaggle", None), ("tree", "demo.json")])
def test_cli_says_which_layout_it_found_and_what_it_ignored(layouts, tmp_path, layout, ignored):
    r = run_make_shards("--src", layouts[layout], "--out", tmp_path / "o", "--workers", "1", "--splits", "val")
    assert r.returncode == 0, r.stderr
    assert f"layout: {layout}," in r.stdout
    assert (f"ignored in {layouts[layout]}: {ignored}" in r.stdout) if ignored else "ignored in" not in r.stdout
    summary = next(line for line in r.stdout.splitlines() if line.startswith("done:"))
    if layout.startswith("hf-"):
        assert "read in one streaming pass" in summary


def test_two_layouts_in_one_folder_are_ambiguous_until_layout_chooses(layouts, tmp_path):
    src = tmp_path / "both"
    shutil.copytree(layouts["tree"], src)
    for f in layouts["official"].iterdir():
        shutil.copy(f, src)
    with pytest.raises(SourceError, match=r"more than one ImageNet layout.*--layout tree or --layout official"):
        convert(src, tmp_path / "o")
    a = convert(src, tmp_path / "a", layout="official", shard_size=7)
    b = convert(src, tmp_path / "b", layout="tree", shard_size=7)
    assert a["splits"]["val"]["shard_sha256"] == b["splits"]["val"]["shard_sha256"]


def _copy_without(src: Path, dst: Path, *drop: str) -> Path:
    shutil.copytree(src, dst)
    for name in drop:
        (dst / name).unlink()
    return dst


@pytest.mark.parametrize("layout,drop,named", [
    ("hf-tar", "data/train_images_3.tar.gz", "data/train_images_3.tar.gz"),
    ("hf-parquet", "data/train-00001-of-00002.parquet", "data/train-00001-of-00002.parquet"),
    ("timm-wds", "imagenet1k-train-0002.tar", "imagenet1k-train-0002.tar"),
    ("official", "ILSVRC2012_img_train.tar", "ILSVRC2012_img_train.tar"),
    ("hf-tar", "data/val_images.tar.gz", "val_images.tar.gz")])
def test_a_half_present_layout_names_the_files_it_expected(layouts, tmp_path, layout, drop, named):
    src = _copy_without(layouts[layout], tmp_path / "src", drop)
    with pytest.raises(SourceError, match="expected") as e:
        convert(src, tmp_path / "o")
    assert named in str(e.value)


def test_a_folder_of_something_else_lists_every_layout_it_looked_for(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "photos.zip").write_bytes(b"PK")
    with pytest.raises(SourceError) as e:
        convert(tmp_path / "src", tmp_path / "o")
    for expected in ("train/<wnid>", "ILSVRC2012_img_train.tar", ".parquet", "train_images_0.tar.gz",
                     "imagenet1k-train-0000.tar"):
        assert expected in str(e.value)


def test_classes_py_is_read_as_data_never_run(tmp_path):
    trap = tmp_path / "ran"
    (tmp_path / "classes.py").write_text(f"open({str(trap)!r}, 'w').write('x')\nfrom collections import OrderedDict\n"
                                         "IMAGENET2012_CLASSES = OrderedDict({'n01440764': 'tench, Tinca tinca'})\n")
    assert hf.read_classes(tmp_path / "classes.py") == {"n01440764": "tench, Tinca tinca"}
    assert not trap.exists()
    (tmp_path / "classes.py").write_text("IMAGENET2012_CLASSES = load('elsewhere')\n")
    with pytest.raises(DataError, match="no literal IMAGENET2012_CLASSES"):
        hf.read_classes(tmp_path / "classes.py")


def test_hf_val_alone_takes_its_classes_from_classes_py(layouts, converted, tmp_path):
    manifest = convert(layouts["hf-parquet"], tmp_path / "o", splits=("val",), shard_size=7)
    assert manifest["splits"]["val"]["shard_sha256"] == converted("tree", 1)[1]["splits"]["val"]["shard_sha256"]
    src = _copy_without(layouts["hf-tar"], tmp_path / "no-classes", "classes.py")
    with pytest.raises(SourceError, match="classes.py"):
        convert(src, tmp_path / "o2", splits=("val",))


def test_timm_cls_in_another_class_order_is_mapped_by_the_json_class(layouts, converted, tmp_path, capsys):
    tree = layouts["tree"]
    classes = sorted(p.name for p in (tree / "train").iterdir())
    src = pack_timm(tree, tmp_path / "timm", demo_val_wnids(tree), shard_size=4,
                    cls_of={w: len(classes) - 1 - i for i, w in enumerate(classes)})
    manifest = convert(src, tmp_path / "o", shard_size=7)
    assert manifest["splits"]["train"]["shard_sha256"] == converted("tree", 1)[1]["splits"]["train"]["shard_sha256"]
    assert "samples' .cls differ from the sorted-wnid index" in capsys.readouterr().out


def test_a_gzip_tar_cut_short_is_an_error_naming_it(layouts, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(layouts["hf-tar"], src)
    val = src / "data" / "val_images.tar.gz"
    val.write_bytes(val.read_bytes()[: val.stat().st_size // 2])
    with pytest.raises(DataError, match=r"val_images\.tar\.gz: truncated or damaged.*download it again"):
        convert(src, tmp_path / "o")


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((24, 24, 3), i % 255, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_a_streamed_source_is_read_with_a_bounded_window_in_flight(tmp_path, monkeypatch):
    """The reader runs ahead of the workers by at most ordered_map's window, not the whole archive."""
    pulled, ahead = [0], []

    def members():
        for i in range(400):
            pulled[0] += 1
            yield stream.Member(f"a.tar.gz/x{i}_n00000001.JPEG", f"x{i}.JPEG", "n00000001", _jpeg(i))

    class Bar:
        n = 0

        def update(self, n=1):
            Bar.n += n
            ahead.append(pulled[0] - Bar.n)

    monkeypatch.setattr(stream, "progress_bar", lambda *a, **k: __import__("contextlib").nullcontext(Bar()))
    spilled = stream.convert_stream(members(), tmp_path / "x.spill", size=16, quality=90, workers=2, total=400,
                                    desc="t")
    assert len(spilled) == 400 and all(s.reason is None for _, s in spilled)
    assert max(ahead) <= 2 * 4 * 16 + 16  # workers x ahead x chunksize, plus the chunk being cut
    assert stream.read_spilled(spilled[-1][1])[:2] == b"\xff\xd8"


# ---------------------------------------------------------------- the format version
def _with_formats(src: Path, dst: Path, top, **splits) -> Path:
    shutil.copytree(src, dst)
    manifest = read_manifest(dst)
    manifest.pop("format") if top is None else manifest.update(format=top)
    for split, entry in manifest["splits"].items():
        entry.pop("format", None)
        if split in splits:
            entry["format"] = splits[split]
    (dst / MANIFEST).write_text(json.dumps(manifest))
    return dst


def test_manifest_records_the_format_version_for_itself_and_each_split(converted):
    manifest = converted("tree", 1)[1]
    assert manifest["format"] == 2 and {e["format"] for e in manifest["splits"].values()} == {2}


@pytest.mark.parametrize("top,splits,refused", [
    (2, {"train": 2, "val": 1}, "mixes shards of two format versions"),
    (None, {"val": 2}, "mixes shards of two format versions"),   # an old manifest, one split re-made
    (2, {"val": 3}, "newer make_shards"),
    (None, {}, None),                                            # a whole folder of the first version: readable
    (2, {}, None)])
def test_loaders_refuse_shards_of_two_format_versions(converted, tmp_path, top, splits, refused):
    out = _with_formats(converted("tree", 1)[0], tmp_path / "s", top, **splits)
    if refused is None:
        assert open_dataset(out).split("val").tars
        return
    with pytest.raises(DataError, match=refused) as e:
        open_dataset(out)
    assert "make_shards" in str(e.value)  # the fix is in the message


def test_make_shards_will_not_leave_an_older_split_beside_a_new_one(converted, layouts, tmp_path):
    out = _with_formats(converted("tree", 1)[0], tmp_path / "s", None)  # as the first version wrote it
    with pytest.raises(ConfigError, match=r"train by format 1.*--splits train,val"):
        convert(layouts["tree"], out, splits=("val",), shard_size=7)
    manifest = convert(layouts["tree"], out, shard_size=7)  # every split re-made: one version again
    assert manifest["format"] == 2 and open_dataset(out).split("train").tars


# ---------------------------------------------------------------- re-runs of a streamed layout
def _no_reading(*args, **kwargs):
    raise AssertionError("the archives were read again")


def test_a_rerun_of_a_streamed_layout_keeps_its_shards_without_reading_the_files(layouts, converted, tmp_path,
                                                                                 monkeypatch, capsys):
    out = tmp_path / "o"
    first = convert(layouts["hf-tar"], out, shard_size=7)
    assert not list((out / ".make_shards").glob("*.spill"))  # deleted once the split's shards were written
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    monkeypatch.setattr(hf, "tar_members", _no_reading)
    again = convert(layouts["hf-tar"], out, shard_size=7)
    assert again["splits"] == first["splits"] and {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == stamps
    assert "listing of the last streaming pass reused" in capsys.readouterr().out


def test_a_streamed_split_missing_a_shard_is_read_again(layouts, converted, tmp_path, capsys):
    out = tmp_path / "o"
    first = convert(layouts["hf-parquet"], out, shard_size=7)
    (out / "train-000001.tar").unlink()
    again = convert(layouts["hf-parquet"], out, shard_size=7)
    assert again["splits"]["train"]["shard_sha256"] == first["splits"]["train"]["shard_sha256"]
    assert "train: 2 parquet files read in one streaming pass" in capsys.readouterr().out


def test_an_interrupted_streamed_conversion_resumes_from_its_spill(layouts, converted, tmp_path, monkeypatch):
    out = tmp_path / "o"
    interrupted_convert(layouts["hf-tar"], out, monkeypatch, at=10, shard_size=7)  # dies in the second shard
    assert (out / ".make_shards" / "train.spill").is_file()  # both splits are read before any shard is written
    monkeypatch.setattr(hf, "tar_members", _no_reading)  # so both spills are whole: nothing is read again
    resumed = convert(layouts["hf-tar"], out, shard_size=7)
    tree = converted("tree", 1)[1]
    assert all(resumed["splits"][s]["shard_sha256"] == tree["splits"][s]["shard_sha256"] for s in ("train", "val"))
