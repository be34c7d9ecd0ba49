"""tools/compute_pca.py against numpy on the decoded pixels; invariances; the sign rule; errors."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, iter_shard, read_manifest, write_shards
from shardkit import stats as compute_pca
from common.errors import DataError
from common.files import write_json
from shardkit.format import MANIFEST


def decoded_pixels(shards) -> np.ndarray:
    """Every train pixel, RGB, [0, 1], float64, decoded independently with Pillow."""
    manifest = read_manifest(shards)
    chunks = []
    for name in manifest["splits"]["train"]["shards"]:
        for _, members in iter_shard(shards / name):
            chunks.append(np.asarray(Image.open(io.BytesIO(members["jpg"])).convert("RGB")).reshape(-1, 3))
    return np.concatenate(chunks).astype(np.float64) / 255.0


def run(shards, **kw) -> dict:
    """compute_pca into its own file per option set, so runs do not reuse each other's result."""
    name = "pca-" + "-".join(f"{k}{v}" for k, v in sorted(kw.items())) + ".json"
    return compute_pca.compute(compute_pca.Options(shards=str(shards), out=str(shards / name), **kw))


@pytest.fixture
def shards(tmp_path):
    rng = np.random.default_rng(3)
    samples = []
    for i in range(40):
        base = rng.uniform(20, 235, 3)
        y, x = np.mgrid[0:256, 0:256]
        img = base + 30 * np.stack([np.sin(x / (9 + i)), np.cos(y / 13), np.sin((x + y) / 17)], -1)
        samples.append((np.clip(img + rng.normal(0, 8, img.shape), 0, 255), i % 3))
    return write_shards(tmp_path / "s", {"train": samples}, classes=3, shard_size=7)


def test_matches_numpy(shards):
    stats = run(shards, workers=1)
    px = decoded_pixels(shards)
    mean = px.mean(0)
    cov = np.cov(px, rowvar=False, bias=True)
    assert stats["images"] == 40 and stats["pixels"] == len(px)
    np.testing.assert_allclose(stats["mean"], mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(stats["cov"], cov, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(stats["std"], np.sqrt(np.diag(cov)), rtol=1e-10)
    w, v = np.linalg.eigh(cov)
    np.testing.assert_allclose(stats["eigval"], w[::-1], rtol=1e-10, atol=1e-14)
    vec = np.asarray(stats["eigvec"])
    for j in range(3):  # the same eigenvectors, up to sign
        assert abs(abs(np.dot(vec[:, j], v[:, ::-1][:, j])) - 1) < 1e-8


def test_eigen_decomposition_properties(shards):
    stats = run(shards, workers=1)
    cov, val, vec = (np.asarray(stats[k]) for k in ("cov", "eigval", "eigvec"))
    assert list(val) == sorted(val, reverse=True)
    np.testing.assert_allclose(vec.T @ vec, np.eye(3), atol=1e-12)
    for j in range(3):
        np.testing.assert_allclose(cov @ vec[:, j], val[j] * vec[:, j], atol=1e-14)
        assert vec[np.argmax(np.abs(vec[:, j])), j] > 0  # the sign rule


def test_sign_rule():
    v = np.array([[0.1, -0.9, 0.0], [-0.8, 0.1, 0.6], [0.2, 0.3, -0.8]])
    out = compute_pca.sign_rule(v)
    np.testing.assert_array_equal(out[:, 0], -v[:, 0])
    np.testing.assert_array_equal(out[:, 1], -v[:, 1])
    np.testing.assert_array_equal(out[:, 2], -v[:, 2])
    np.testing.assert_array_equal(compute_pca.sign_rule(out), out)


def test_invariant_to_workers_and_shard_order(shards):
    one = run(shards, workers=1)
    two = run(shards, workers=2)
    manifest = read_manifest(shards)
    entry = manifest["splits"]["train"]
    entry["shards"], entry["shard_samples"] = entry["shards"][::-1], entry["shard_samples"][::-1]
    write_json(shards / MANIFEST, manifest)
    rev = run(shards, workers=2, seed=5)  # different options name, same data
    for k in ("mean", "std", "cov", "eigval", "eigvec"):
        assert one[k] == two[k] == rev[k], k  # exact integer sums: identical bits


def test_max_images_subset_is_seeded(shards):
    a = run(shards, workers=1, max_images=9, seed=1)
    b = compute_pca.compute(compute_pca.Options(shards=str(shards), workers=2, max_images=9, seed=1,
                                            out=str(shards / "b.json")))
    c = run(shards, workers=1, max_images=9, seed=2)
    assert a["images"] == b["images"] == 9 and a["subset"]
    assert a["cov"] == b["cov"] and a["cov"] != c["cov"]


def test_mean_image(shards):
    stats = run(shards, workers=2, mean_image=True)
    img = np.load(shards / stats["mean_image"])
    assert img.shape == (256, 256, 3) and img.dtype == np.float32
    px = decoded_pixels(shards).reshape(40, 256, 256, 3)
    np.testing.assert_allclose(img, px.mean(0), atol=1e-6)
    np.testing.assert_allclose(img.reshape(-1, 3).astype(np.float64).mean(0), stats["mean"], atol=1e-6)


def test_second_run_is_kept(shards, capsys):
    opts = compute_pca.Options(shards=str(shards), workers=1)
    first = compute_pca.compute(opts)
    second = compute_pca.compute(opts)
    assert "up to date" in capsys.readouterr().out
    assert first["cov"] == second["cov"]


def test_errors(shards, tmp_path):
    with pytest.raises(DataError, match="manifest.json: not found"):
        compute_pca.compute(compute_pca.Options(shards=str(tmp_path / "none")))
    broken = tmp_path / "broken"
    shutil.copytree(shards, broken)
    (broken / "train-000002.tar").unlink()
    with pytest.raises(DataError, match="train-000002.tar: listed in .* but missing"):
        compute_pca.compute(compute_pca.Options(shards=str(broken)))
    # an image that does not decode: overwrite a .jpg payload in place with garbage
    bad = tmp_path / "bad"
    shutil.copytree(shards, bad)
    tar = bad / "train-000001.tar"
    idx = (bad / "train-000001.idx").read_text().splitlines()[2].split()
    offset, size, name = int(idx[1]), int(idx[2]), idx[3]
    data = bytearray(tar.read_bytes())
    data[offset:offset + size] = b"\x00" * size
    tar.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"train-000001.tar: sample {name.split('.')[0]}: its .jpg does not decode"):
        compute_pca.compute(compute_pca.Options(shards=str(bad)))


def test_cli_prints_summary(shards):
    r = subprocess.run([sys.executable, "tools/compute_pca.py", "--shards", str(shards), "--workers", "2"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "eigval" in r.stdout and "images/s" in r.stdout
    stats = json.loads((shards / "pca.json").read_text())
    assert stats["source"]["shards"] == read_manifest(shards)["splits"]["train"]["shards"]
    r = subprocess.run([sys.executable, "tools/compute_pca.py", "--shards", str(shards / "missing")],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode != 0 and "manifest.json: not found" in r.stderr


def test_failed_force_keeps_the_old_pca_json(shards, tmp_path):
    copy = tmp_path / "forced"
    shutil.copytree(shards, copy)
    compute_pca.compute(compute_pca.Options(shards=str(copy), workers=1))
    before = (copy / "pca.json").read_bytes()
    tar = copy / "train-000001.tar"
    idx = (copy / "train-000001.idx").read_text().splitlines()[2].split()
    data = bytearray(tar.read_bytes())
    data[int(idx[1]):int(idx[1]) + int(idx[2])] = b"\x00" * int(idx[2])  # one image no longer decodes
    tar.write_bytes(bytes(data))
    with pytest.raises(DataError, match="does not decode"):
        compute_pca.compute(compute_pca.Options(shards=str(copy), workers=1, force=True))
    assert (copy / "pca.json").read_bytes() == before
    assert sorted(p.name for p in copy.iterdir() if "pca" in p.name) == ["pca.json"]  # no temporary left over


def test_piped_output_has_no_carriage_returns(shards):
    r = subprocess.run([sys.executable, "tools/compute_pca.py", "--shards", str(shards), "--workers", "1", "--force",
                        "--out", str(shards / "piped.json")], cwd=REPO, capture_output=True)  # bytes: keep \r
    assert r.returncode == 0, r.stderr
    assert b"\r" not in r.stdout + r.stderr and b"done:" in r.stdout
    (shards / "piped.json").unlink()
