"""The whole chain as a user runs it, on a tiny demo tree: the same commands as README, in seconds."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO


def sh(*args: str) -> str:
    r = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{' '.join(args)}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.mark.slow
def test_demo_tree_to_evaluation(tmp_path):
    src, shards, runs = tmp_path / "imagenet", tmp_path / "shards", tmp_path / "runs"
    out = sh("tools/make_demo_data.py", "--out", str(src), "--classes", "3", "--train-per-class", "12",
             "--val-per-class", "4")
    assert "3 classes" in out
    out = sh("tools/make_shards.py", "--src", str(src), "--out", str(shards), "--shard-size", "10")
    assert "done: 48 images (train 36, val 12)" in out and "4 skipped" in out  # 3 broken train files, 1 val
    out = sh("tools/compute_pca.py", "--shards", str(shards))
    pca = json.loads((shards / "pca.json").read_text())
    assert "eigval" in out and pca["images"] == 36 and pca["pixels"] == 36 * 256 * 256
    assert pca["eigval"] == sorted(pca["eigval"], reverse=True) and pca["eigval"][-1] > 0
    out = sh("-m", "model.train", "--shards", str(shards), "--runs", str(runs), "--name", "demo", "--device", "cpu",
             "--batch-size", "8", "--max-steps", "3", "--log-every", "1", "--init", "kaiming", "--workers", "1")
    summary = json.loads((runs / "demo" / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["val_images"] == 12
    assert "ten_crop_top1_err" in summary
    with Image.open(runs / "demo" / "curves.png") as curves:
        assert curves.format == "PNG" and curves.size == (800, 900)  # model.metrics: 8 x 9 inches at 100 dpi
    top1 = {}
    for backend in ("dali", "torch"):  # the model trained on DALI's batches, evaluated through both loaders
        out = sh("-m", "model.evaluate", "--checkpoint", str(runs / "demo" / "model.pt"), "--shards", str(shards),
                 "--device", "cpu", "--backend", backend, "--json", str(tmp_path / f"{backend}.json"))
        result = json.loads((tmp_path / f"{backend}.json").read_text())
        assert result["images"] == 12 and f"evaluate: 12 images, centre crop: top-1 error {result['top1_err']:.4f}" in out
        top1[backend] = result["top1_err"]
    assert top1["dali"] == pytest.approx(summary["val_top1_err"])  # the same loader as training's eval: equal
    assert abs(top1["torch"] - top1["dali"]) <= 1 / 12  # Pillow's decode vs DALI's: at most one image apart
    out = sh("-m", "pipeline.preview", "--shards", str(shards), "--out", str(tmp_path / "p.png"), "--count", "4")
    assert "preview: 4 augmented train images (dali)" in out
    with Image.open(tmp_path / "p.png") as sheet:  # one row of 4 tiles of 224 + 4 pad, captions below
        assert sheet.size == (4 * 228 + 4, 224 + 40 + 4 + 4)
        tiles = np.asarray(sheet.convert("RGB"))[4:228, 4:228 * 4]
    assert tiles.std() > 10  # images, not a blank sheet
