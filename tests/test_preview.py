"""pipeline/preview.py: captions carry the loader's real draws; --backend both pairs DALI with the reference."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import Dataset, open_dataset
from pipeline.preview import caption, class_label, dali_batch, preview, reference_batch, reference_maths, to_pixels

pytest.importorskip("nvidia.dali")


def test_dali_draws_reproduce_its_tiles(demo_shards):
    spec = open_dataset(demo_shards).split("train")
    images, labels, d = dali_batch(spec, 8, seed=3)
    assert d["xy"].shape == (8, 2) and d["xy"].min() >= 0 and d["xy"].max() <= 32
    assert len(set(map(tuple, d["xy"]))) > 1 and 0 < d["flip"].sum() < 8  # real draws, not a constant
    dali = to_pixels(images, spec).astype(int)
    for i in range(8):
        same = to_pixels(reference_maths(d["jpeg"][i], d["xy"][i], d["flip"][i], d["alpha"][i], spec), spec)[0]
        assert np.abs(dali[i] - same).max() <= 2, i
        wrong_xy = (d["xy"][i] + 5) % 33
        other = to_pixels(reference_maths(d["jpeg"][i], wrong_xy, not d["flip"][i], d["alpha"][i], spec), spec)[0]
        assert np.abs(dali[i] - other).mean() > 5  # the check can tell a wrong draw


def test_reference_draws_are_the_loaders(demo_shards):
    from pipeline.reference import _Sequence
    data = open_dataset(demo_shards)
    spec = data.split("train")
    images, labels, d = reference_batch(data, 6, seed=1)
    samples = _Sequence(spec, True, 1, 0).take(0, 6)  # the batch's samples: epoch 0, rank 0's share
    assert [s.label for s in samples] == labels.tolist()
    for i, s in enumerate(samples):
        assert torch.allclose(images[i], reference_maths(s.jpg, d["xy"][i], d["flip"][i], d["alpha"][i], spec)[0],
                              atol=1e-5)


def test_both_backends_side_by_side(demo_shards):
    sheet, diff = preview(demo_shards, "both", 4, seed=0)
    assert sheet.size == (4 * 228 + 4, 2 * (224 + 40 + 4) + 4)  # 8 tiles: DALI, reference, DALI, ...
    assert diff["max_abs_diff"] <= 2


def dataset(manifest: dict) -> Dataset:
    return Dataset(Path("shards"), {"size": 256, "splits": {}, **manifest}, Path("shards/pca.json"))


def test_captions_name_the_class_and_the_draws():
    named = dataset({"classes": ["n01440764", "n01443537"], "class_names": ["tench", "goldfish"]})
    assert class_label(named, 1) == "1 n01443537 goldfish"
    old_style = dataset({"classes": ["n01440764"], "class_names": {"n01440764": "tench"}})
    assert class_label(old_style, 0) == "0 n01440764 tench"
    assert class_label(dataset({"classes": ["n01440764"]}), 0) == "0 n01440764"
    assert caption(named, 0, (3, 31), True, [0.1, -0.05, 0.0]) == \
        "0 n01440764 tench\ncrop x=3 y=31 flipped\nalpha +0.100 -0.050 +0.000"
