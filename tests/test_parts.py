"""make_shards and compute_pca split over machines (shardkit.parts): three parts run as separate processes with
different worker counts, then the merge, byte for byte one run's; a missing, unfinished or differently made part
is refused by name; a part killed with -9 resumes."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import ConfigError, DataError
from shardkit import stats as compute_pca
from shardkit.parts import Part
from tests.conftest import REPO, convert, kill_9_when

SHARD = 8  # 59 listed train images -> 8 shards, 21 val -> 3: eleven shards over three parts
PY = sys.executable


def tool(name: str, *args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([PY, f"tools/{name}.py", *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, **kw)


def make_shards(src, out, *args) -> subprocess.CompletedProcess:
    return tool("make_shards", "--src", src, "--out", out, "--shard-size", SHARD, *args)


def outputs(folder: Path) -> dict[str, bytes]:
    """Every file a reader uses: shards, indexes, manifest.json, pca.json."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def one_run(demo_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "shards"
    convert(demo_tree, out, shard_size=SHARD, workers=2)
    compute_pca.compute(compute_pca.Options(shards=str(out), workers=1))
    return out


@pytest.mark.slow
def test_three_parts_in_separate_processes_merge_to_the_bytes_of_one_run(demo_tree, one_run, tmp_path):
    out = tmp_path / "shards"
    for k, workers in ((1, 1), (2, 2), (3, 1)):
        r = make_shards(demo_tree, out, "--workers", workers, "--part", f"{k}/3")
        assert r.returncode == 0, r.stderr
        assert f"done: part {k}/3" in r.stdout and not (out / "manifest.json").exists()
    r = make_shards(demo_tree, out, "--merge", 3)
    assert r.returncode == 0, r.stderr
    for k, workers in ((1, 2), (2, 1), (3, 1)):
        r = tool("compute_pca", "--shards", out, "--workers", workers, "--part", f"{k}/3")
        assert r.returncode == 0, r.stderr
        assert not (out / "pca.json").exists()
    r = tool("compute_pca", "--shards", out, "--merge", 3)
    assert r.returncode == 0, r.stderr
    merged, single = outputs(out), outputs(one_run)
    assert sorted(merged) == sorted(single) and {"manifest.json", "pca.json", "val-000002.idx"} <= set(merged)
    for name in single:
        assert merged[name] == single[name], name


@pytest.mark.slow
def test_a_missing_part_and_a_part_made_with_another_size_are_refused_by_name(demo_tree, tmp_path):
    out = tmp_path / "shards"
    assert make_shards(demo_tree, out, "--workers", 1, "--part", "1/3").returncode == 0
    assert make_shards(demo_tree, out, "--workers", 1, "--part", "3/3", "--size", 128).returncode == 0
    r = make_shards(demo_tree, out, "--merge", 3)
    assert r.returncode == 2 and r.stderr.count("error:") == 1, r.stderr
    assert "cannot merge 3 parts, nothing written" in r.stderr
    assert "part 2/3 missing: run `python tools/make_shards.py" in r.stderr and "--part 2/3`" in r.stderr
    assert "part 3/3 was made with --size 128 (this merge: 256)" in r.stderr
    assert "part 1/3" not in r.stderr
    assert not (out / "manifest.json").exists()


def test_a_part_record_is_written_last_and_an_unfinished_part_is_named(demo_tree, tmp_path, monkeypatch):
    from shardkit import convert as shardkit_convert
    out = tmp_path / "shards"
    real = shardkit_convert.SplitWriting.write_shard
    calls = {"n": 0}

    def dies_on_the_third_shard(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as a kill would leave it
        return real(self, *args)

    monkeypatch.setattr(shardkit_convert.SplitWriting, "write_shard", dies_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        convert(demo_tree, out, shard_size=SHARD, part=Part(1, 2))
    monkeypatch.undo()
    assert not (out / ".make_shards" / "part-1-of-2.json").exists()
    convert(demo_tree, out, shard_size=SHARD, part=Part(2, 2))
    with pytest.raises(DataError, match=r"part 1/2 unfinished \(2 of 6 done\): run .* --part 1/2` \(it keeps"):
        convert(demo_tree, out, shard_size=SHARD, merge=2)


@pytest.mark.slow
def test_a_part_killed_with_minus_9_resumes_and_the_merge_is_byte_identical(demo_tree, one_run, tmp_path):
    out = tmp_path / "shards"
    for k in (1, 3):
        assert make_shards(demo_tree, out, "--workers", 1, "--part", f"{k}/3").returncode == 0
    args = [PY, "tools/make_shards.py", "--src", str(demo_tree), "--out", str(out), "--shard-size", str(SHARD),
            "--workers", "1", "--part", "2/3"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_9_when(proc, out / ".make_shards" / "train-000001.tar.json", "the part")  # after part 2's first shard
    assert not (out / ".make_shards" / "part-2-of-3.json").exists()
    r = make_shards(demo_tree, out, "--workers", 2, "--part", "2/3")
    assert r.returncode == 0 and "already done, kept" in r.stdout, r.stderr
    assert make_shards(demo_tree, out, "--merge", 3).returncode == 0
    assert list(out.rglob("*.partial")) == []
    for name, data in outputs(one_run).items():
        if name != "pca.json":
            assert (out / name).read_bytes() == data, name


def test_compute_pca_parts_refuse_a_missing_part_and_one_of_another_subset(one_run, tmp_path):
    shards = tmp_path / "shards"
    shutil.copytree(one_run, shards, ignore=shutil.ignore_patterns("pca.json"))

    def pca(**kw):
        return compute_pca.compute(compute_pca.Options(shards=str(shards), workers=1, **kw))

    pca(part=Part(1, 2))
    with pytest.raises(DataError, match=r"pca.json: cannot merge 2 parts, nothing written: part 2/2 missing: run "):
        pca(merge=2)
    pca(part=Part(2, 2), max_images=20)
    with pytest.raises(DataError, match=r"part 2/2 was made with --max-images 20 \(this merge: None\)"):
        pca(merge=2)
    assert not (shards / "pca.json").exists()
    pca(part=Part(2, 2))
    pca(merge=2)
    assert (shards / "pca.json").read_bytes() == (one_run / "pca.json").read_bytes()


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", ""])
def test_part_must_be_k_of_n(text):
    with pytest.raises(ConfigError, match=r"expected K/N with 1 <= K <= N"):
        Part.parse(text)


def test_parts_interleave_and_cover_the_work():
    owners = [[k for k in range(1, 4) if Part(k, 3).owns(i)] for i in range(10)]
    assert owners == [[1], [2], [3], [1], [2], [3], [1], [2], [3], [1]]


def test_a_part_made_with_another_opencv_is_refused(demo_tree, tmp_path, monkeypatch):
    """Another encoder version may give other JPEG bytes: such a part is not merged."""
    import cv2
    out = tmp_path / "shards"
    convert(demo_tree, out, shard_size=SHARD, part=Part(1, 2))
    monkeypatch.setattr(cv2, "__version__", "0.0.1")
    convert(demo_tree, out, shard_size=SHARD, part=Part(2, 2))
    monkeypatch.undo()
    with pytest.raises(DataError, match=rf"part 2/2 was made with opencv 0.0.1 \(this merge: {cv2.__version__}\)"):
        convert(demo_tree, out, shard_size=SHARD, merge=2)


def test_a_streamed_layout_is_not_split_into_parts(demo_tree, tmp_path):
    """Hugging Face's files are read and converted in one pass: --part is refused before anything is read."""
    from shardkit.demo_archives import pack_hf
    from tests.conftest import demo_val_wnids
    src = pack_hf(demo_tree, tmp_path / "hf", demo_val_wnids(demo_tree), fmt="tar")
    with pytest.raises(ConfigError, match=r"a streamed layout is read and converted in one pass, so --part/--merge "
                                          r"cannot split it"):
        convert(src, tmp_path / "out", shard_size=SHARD, part=Part(1, 2))
    assert not (tmp_path / "out" / ".make_shards").exists() or not any((tmp_path / "out" / ".make_shards").iterdir())
