"""Shards that are read-only or remote: loaders, training, evaluation and verify_shards never write beside the
shards; `s3://` and `https://` folders read through shardkit.storage give what the local folder gives; the
index files are fetched once into a local cache; stage_shards downloads and uploads resumably, checked against
the manifest's SHA-256. Object storage is moto's S3 server on 127.0.0.1, started here (never a real bucket)."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.errors import ConfigError, DataError
from common.files import HOST
from model import evaluate
from model.metrics import read_metrics
from model.train import Config, train
from pipeline import make_loader, open_dataset
from shardkit import stats as compute_pca, storage
from shardkit.format import MANIFEST
from shardkit.stage import stage
from shardkit.verify import verify
from tests.conftest import REPO, invoke, small_shards

BUCKET = "shards"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return small_shards(tmp_path_factory.mktemp("remote"), classes=3, train_per_class=12, val_per_class=4, shard_size=10, seed=2)


@pytest.fixture(scope="module")
def s3(shards, tmp_path_factory):
    """moto's S3 server with the shards uploaded to s3://shards/demo (also public over plain HTTP); yields the
    endpoint. Skips, saying why, only when the server cannot start."""
    from measure.s3server import S3Unavailable, local_s3, make_bucket

    cache = os.environ.get("ALEXNET_CACHE")
    os.environ["ALEXNET_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        with local_s3() as endpoint:
            make_bucket(BUCKET, public=True)
            stage(str(shards), f"s3://{BUCKET}/demo")
            yield endpoint
    except S3Unavailable as e:
        pytest.skip(f"no local S3 server: {e}")
    finally:
        os.environ.pop("ALEXNET_CACHE") if cache is None else os.environ.__setitem__("ALEXNET_CACHE", cache)


def objects(prefix: str) -> dict[str, int]:
    fs = storage.location(prefix).fs
    fs.invalidate_cache()
    return {p: info["size"] for p, info in fs.find(prefix, detail=True).items()}


def snapshot(folder: Path) -> dict[str, tuple]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def epoch(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))


def cfg(shards, runs, **kw) -> Config:
    base = dict(shards=str(shards), runs=str(runs), device="cpu", backend="dali", batch_size=8, workers=1,
                ten_crop_eval=False, log_every=1, init="kaiming", max_steps=2, limit_val=6, epochs=1)
    return Config(**{**base, **kw})


@pytest.fixture(scope="module")
def read_only(shards, tmp_path_factory):
    """A copy of the shards without write permission, its listing (sizes, times) before anything read it, and a
    short training run on it (also the reference for the same run from S3)."""
    root = tmp_path_factory.mktemp("ro")
    folder = root / "shards"
    shutil.copytree(shards, folder)
    before = snapshot(folder)
    for p in [folder, *folder.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    train(cfg(folder, root / "runs", name="local"))
    yield folder, before, root / "runs" / "local"
    for p in [folder, *folder.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


@pytest.mark.slow
def test_a_read_only_shards_folder_is_only_read(read_only, tmp_path):
    """Loaders, training (the fixture's run), evaluation and verify_shards on a folder without write permission;
    as root (which permissions do not stop) its listing, sizes and times must not change either."""
    folder, before, run = read_only
    for backend in ("dali", "torch"):
        assert len(epoch(make_loader(folder, "train", 8, backend=backend, device="cpu", workers=1))) == 4
        assert len(epoch(make_loader(folder, "val", 8, backend=backend, device="cpu", workers=1))) == 2
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
    r = invoke(evaluate.main, ["--checkpoint", str(run / "model.pt"), "--shards", str(folder), "--device", "cpu",
                               "--backend", "torch", "--batch-size", "4", "--workers", "1"])
    assert r.exit_code == 0 and "evaluate: 12 images" in r.output, r.output
    assert not verify(folder, decode=True, workers=1, show_progress=False).problems
    assert snapshot(folder) == before


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_loaders_read_s3_as_they_read_the_folder(shards, s3, backend):
    before = objects(f"s3://{BUCKET}/demo")
    for split in ("train", "val"):
        local = make_loader(shards, split, 8, backend=backend, device="cpu", workers=1, seed=3)
        remote = make_loader(f"s3://{BUCKET}/demo", split, 8, backend=backend, device="cpu", workers=1, seed=3)
        assert same_batches(epoch(local), epoch(remote)), split
    assert objects(f"s3://{BUCKET}/demo") == before  # nothing written beside the remote shards


@pytest.mark.slow
def test_https_folders_read_by_the_reference_loader_and_dali_is_told_to_stage(shards, s3):
    url = f"{s3}/{BUCKET}/demo"  # the bucket is public: a plain web server's view of the same files
    local = make_loader(shards, "val", 8, backend="torch", device="cpu", workers=1)
    remote = make_loader(url, "val", 8, backend="torch", device="cpu", workers=1)
    assert same_batches(epoch(local), epoch(remote))
    with pytest.raises(ConfigError, match=r"DALI reads local files and s3:// only.*python tools/stage_shards.py "
                                          rf"--shards {url} --out"):
        make_loader(url, "val", 8, backend="dali", device="cpu")


@pytest.mark.slow
def test_training_and_evaluation_from_s3_equal_those_from_the_folder(read_only, s3, tmp_path):
    train(cfg(f"s3://{BUCKET}/demo", tmp_path, name="s3"))
    records = [read_metrics(run / "metrics.jsonl") for run in (read_only[2], tmp_path / "s3")]
    key = [[(r["kind"], r["step"], r["loss"], r.get("top1_err")) for r in rs if r["kind"] in ("train", "eval")]
           for rs in records]
    assert key[0] == key[1] and len(key[0]) == 3
    r = invoke(evaluate.main, ["--checkpoint", str(tmp_path / "s3" / "model.pt"), "--shards", f"s3://{BUCKET}/demo",
                               "--device", "cpu", "--backend", "torch", "--batch-size", "4", "--workers", "1",
                               "--json", str(tmp_path / "eval.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "eval.json").read_text())["images"] == 12


def test_the_index_files_are_fetched_once_into_a_local_cache(shards, s3, monkeypatch):
    manifest = json.loads((shards / MANIFEST).read_text())
    first = open_dataset(f"s3://{BUCKET}/demo").split("train")
    wanted = manifest["splits"]["train"]["shard_index_sha256"]
    assert [p.name for p in first.index_files] == [f"{h}.idx" for h in wanted]
    assert all(p.read_bytes() == (shards / t.name).with_suffix(".idx").read_bytes()
               for p, t in zip(first.index_files, first.tars))

    def no_fetch(paths):
        raise AssertionError(f"fetched again: {paths}")

    monkeypatch.setattr(storage, "read_many", no_fetch)  # a second run takes them from the cache
    again = open_dataset(f"s3://{BUCKET}/demo").split("train")
    assert again.index_files == first.index_files
    assert torch.equal(again.index.members, first.index.members)


@pytest.mark.slow
def test_verify_shards_on_s3_finds_a_changed_object_and_says_how_to_repair(shards, s3):
    assert not verify(f"s3://{BUCKET}/demo", decode=True, workers=1, show_progress=False).problems
    stage(str(shards), f"s3://{BUCKET}/damaged")
    tar = storage.location(f"s3://{BUCKET}/damaged/train-000001.tar")
    data = bytearray(tar.read_bytes())
    data[2000] ^= 0xFF
    tar.fs.pipe_file(tar.url, bytes(data))
    r = subprocess.run([sys.executable, "tools/verify_shards.py", "--shards", f"s3://{BUCKET}/damaged", "--workers",
                        "1"], cwd=REPO, capture_output=True, text=True, timeout=300)  # the server's address: env
    assert r.returncode == 2, r.stderr
    assert f"bad: s3://{BUCKET}/damaged/train-000001.tar: SHA-256 differs" in r.stdout
    assert r.stderr.count("error:") == 1 and "--verify; then upload the repaired shards: python " \
           f"tools/stage_shards.py --shards shards/ --out s3://{BUCKET}/damaged" in r.stderr


@pytest.mark.slow
def test_staging_copies_only_what_is_missing_or_differs_and_refuses_a_damaged_source(shards, s3, tmp_path, capsys):
    local = tmp_path / "staged"
    first = stage(f"s3://{BUCKET}/demo", str(local))
    names = sorted(p.name for p in shards.iterdir() if p.is_file())
    assert sorted(p.name for p in local.iterdir()) == names
    assert all((local / n).read_bytes() == (shards / n).read_bytes() for n in names)
    assert first.copied == len(names)
    (local / "train-000002.tar").unlink()
    with open(local / "val-000000.tar", "r+b") as f:
        f.seek(1500)
        f.write(b"\0\1\2")
    killed = local / f".train-000002.tar.{HOST}-{2**22 + 7}.partial"  # a download killed with -9
    killed.write_bytes(b"half")
    again = stage(f"s3://{BUCKET}/demo", str(local))
    assert again.copied == 2 and again.kept == len(names) - 2 and not killed.exists()
    assert all((local / n).read_bytes() == (shards / n).read_bytes() for n in names)
    capsys.readouterr()
    compute_pca.compute(compute_pca.Options(shards=str(local), workers=1))  # pca.json stays valid where it lands
    assert "is up to date" in capsys.readouterr().out
    # an object damaged in the store is never kept under its name
    stage(str(shards), f"s3://{BUCKET}/bad")
    tar = storage.location(f"s3://{BUCKET}/bad/train-000000.tar")
    tar.fs.pipe_file(tar.url, tar.read_bytes()[:-1] + b"\1")
    with pytest.raises(DataError, match=r"train-000000.tar: SHA-256 differs from the manifest's .* nothing was kept"):
        stage(f"s3://{BUCKET}/bad", str(tmp_path / "bad"))
    assert not (tmp_path / "bad" / "train-000000.tar").exists() and not (tmp_path / "bad" / MANIFEST).exists()


def test_missing_remote_folders_are_one_line_errors(s3):
    with pytest.raises(DataError, match=rf"s3://{BUCKET}/nothing/manifest.json: not found; make shards first: .*"
                                        rf"stage_shards.py --shards shards/ --out s3://{BUCKET}/nothing"):
        open_dataset(f"s3://{BUCKET}/nothing")
    with pytest.raises(ConfigError, match=r"ftp:// is not a storage this project reads"):
        open_dataset("ftp://host/shards")


def test_make_shards_and_compute_pca_write_locally_and_say_how_to_upload(tmp_path):
    from tests.conftest import convert
    with pytest.raises(ConfigError, match=r"--out s3://b/x: make_shards writes to a local folder .* "
                                          r"tools/stage_shards.py --shards shards/ --out s3://b/x"):
        convert(tmp_path, "s3://b/x")
    with pytest.raises(ConfigError, match=r"compute_pca reads a local shards folder"):
        compute_pca.compute(compute_pca.Options(shards="s3://b/x"))
    assert not Path("s3:").exists()
