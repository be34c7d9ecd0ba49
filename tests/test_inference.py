"""Using a trained model: checkpoint metadata, predict, evaluate with torchvision-style weights, export."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from model import evaluate as evaluate_cli
from model import export as export_cli
from model import predict as predict_cli
from model.alexnet import build_model
from model.checkpoint import inference_meta, save_checkpoint
from model.export import compare_with_eager, export, read_meta
from model.inference import IMAGENET_MEAN, IMAGENET_STD, Renormalize, load_image, load_model, prepare
from tests.conftest import flat_pca, invoke, write_shards

CLASSES = [f"n{i:08d}" for i in range(4)]
MEAN, STD = [0.45, 0.5, 0.55], [0.2, 0.25, 0.3]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    model = build_model("paper", 4, init="kaiming")
    meta = inference_meta(variant="paper", lrn="paper", classes=CLASSES,
                          class_names=["tench", "goldfish", "shark", "ray"], mean=MEAN, std=STD)
    save_checkpoint(path, {"model": model.state_dict(), "arch": {"variant": "paper", "num_classes": 4},
                           "inference": meta})
    return path


def _image(seed: int, size=(256, 256)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def test_checkpoint_loads_with_its_metadata(checkpoint):
    model, meta = load_model(checkpoint=checkpoint)
    assert meta["classes"] == CLASSES and meta["mean"] == MEAN and meta["class_names"][0] == "tench"
    assert not model.training and model.classifier[-1].out_features == 4


def test_val_preprocessing_and_predict(checkpoint, tmp_path):
    a = tmp_path / "a.png"
    Image.fromarray(_image(1)).save(a)                     # 256x256, lossless: the crop is exact
    b = tmp_path / "b.jpg"
    Image.fromarray(_image(2, (400, 300))).save(b, quality=95)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    model, meta = load_model(checkpoint=checkpoint)

    x = prepare(load_image(a)[None], meta)
    manual = (torch.from_numpy(_image(1)[16:240, 16:240]).permute(2, 0, 1).float() / 255
              - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(x[0], manual)
    assert load_image(b).shape == (3, 256, 256)

    lines = []
    results, errors = predict_cli.predict(model, meta, [a, bad, b], echo=lines.append, warn=lines.append)
    assert list(results) == [str(a), str(b)] and len(errors) == 1 and "broken.jpg" in errors[0]
    with torch.no_grad():
        want = torch.softmax(model(x), -1)[0]
    top = results[str(a)]
    assert len(top) == 4  # 4 classes: the top 5 is all of them
    assert [p for _, p in top] == pytest.approx(want.sort(descending=True).values.tolist(), abs=1e-6)
    assert top[0][0] == f"{CLASSES[int(want.argmax())]} ({['tench', 'goldfish', 'shark', 'ray'][int(want.argmax())]})"

    run = invoke(predict_cli.main, ["--checkpoint", str(checkpoint), "--ten-crop", str(a), str(bad)])
    assert run.exit_code == 2, run.output
    assert "broken.jpg" in run.output and "1 images classified, 1 unreadable (10-crop" in run.output
    assert run.output.count("  1. ") == 1


def test_renormalize_feeds_the_models_own_statistics():
    torch.manual_seed(0)
    model = build_model("torchvision", 4).eval()
    raw = torch.rand(2, 3, 224, 224)
    ours = (raw - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    theirs = (raw - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    with torch.no_grad():
        wrapped = Renormalize(model, MEAN, STD, IMAGENET_MEAN, IMAGENET_STD)(ours)
        torch.testing.assert_close(wrapped, model(theirs), atol=1e-5, rtol=1e-5)


def test_evaluate_a_torchvision_weights_file(tmp_path):
    rng = np.random.default_rng(0)
    shards = write_shards(tmp_path / "shards", {"val": [(rng.integers(0, 256, (256, 256, 3)), i % 4)
                                                        for i in range(6)]}, 4, pca=flat_pca(mean=MEAN, std=STD))
    torch.manual_seed(0)
    weights = tmp_path / "tv.pth"
    torch.save(build_model("torchvision", 4).state_dict(), weights)  # a plain state dict, as torchvision's
    out = tmp_path / "r.json"
    run = invoke(evaluate_cli.main, ["--weights", str(weights), "--variant", "torchvision", "--shards",
                                                 str(shards), "--backend", "torch", "--device", "cpu",
                                                 "--workers", "0", "--json", str(out)])
    assert run.exit_code == 0, run.output
    assert "evaluate: 6 images" in run.output and '"variant": "torchvision"' in out.read_text()
    wrong = invoke(evaluate_cli.main, ["--weights", str(weights), "--variant", "paper", "--shards",
                                                   str(shards), "--device", "cpu"])
    assert wrong.exit_code == 2 and "does not fit --variant paper" in wrong.output


def _small_head(model: nn.Module) -> nn.Module:
    """AlexNet's features (convs, the paper's LRN, pools) with a small classifier: exports in seconds."""
    model.classifier = nn.Sequential(nn.Linear(256 * 6 * 6, 32), nn.ReLU(inplace=True), nn.Linear(32, 4))
    return model.eval()


@pytest.mark.parametrize("fmt", [pytest.param("onnx", marks=pytest.mark.slow), "torch-export"])
def test_export_runs_like_eager(tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model = _small_head(build_model("paper", 4, init="kaiming"))
    meta = inference_meta(variant="paper", lrn="paper", classes=CLASSES, class_names=None, mean=MEAN, std=STD)
    out = export(model, meta, fmt, tmp_path / f"m.{'onnx' if fmt == 'onnx' else 'pt2'}")
    assert compare_with_eager(model, out, fmt, atol=1e-4) <= 1e-4  # on a batch of 3; traced with 2
    assert read_meta(out, fmt)["classes"] == CLASSES and read_meta(out, fmt)["mean"] == MEAN
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temp file left


@pytest.mark.slow
def test_export_cli(checkpoint, tmp_path):
    out = tmp_path / "alexnet.pt2"
    run = invoke(export_cli.main, ["--checkpoint", str(checkpoint), "--format", "torch-export",
                                               "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert "max |exported - eager| logit" in run.output and out.is_file()
