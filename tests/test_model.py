"""model/: AlexNet's shape and size, its inits, the schedules, the paper's update rule, evaluation maths."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from model.alexnet import AlexNet, build_model
from model.lrn import LRN
from model.checkpoint import CheckpointError, require_arch, load_checkpoint, save_checkpoint
from model.distributed import Dist
from model.evaluate import evaluate
from model.optim import PaperSGD
from model.schedule import learning_rate, plateau_drops


def test_parameter_count_and_shapes():
    m = AlexNet()
    assert sum(p.numel() for p in m.parameters()) == 60_965_224
    assert m(torch.zeros(2, 3, 224, 224)).shape == (2, 1000)
    assert AlexNet(num_classes=10)(torch.zeros(1, 3, 224, 224)).shape == (1, 10)
    layers = m.layers()
    assert [layers[f"conv{i}"].groups for i in range(1, 6)] == [1, 2, 1, 2, 2]
    assert [layers[f"conv{i}"].out_channels for i in range(1, 6)] == [96, 256, 384, 384, 256]
    lrn = [x for x in m.features if isinstance(x, LRN)]
    assert len(lrn) == 2 and all((x.size, x.alpha, x.beta, x.k) == (5, 1e-4, 0.75, 2.0) for x in lrn)
    pools = [x for x in m.features if isinstance(x, nn.MaxPool2d)]
    assert len(pools) == 3 and all((x.kernel_size, x.stride) == (3, 2) for x in pools)  # overlapping pooling
    assert [x.p for x in m.classifier if isinstance(x, nn.Dropout)] == [0.5, 0.5]


def test_feature_map_sizes():
    m = AlexNet()
    x = torch.zeros(1, 3, 224, 224)
    sizes = []
    for layer in m.features:
        x = layer(x)
        if isinstance(layer, (nn.MaxPool2d,)):
            sizes.append(tuple(x.shape[1:]))
    assert sizes == [(96, 27, 27), (256, 13, 13), (256, 6, 6)]


def test_torchvision_variant():
    m = build_model("torchvision", 1000)
    assert sum(p.numel() for p in m.parameters()) == 61_100_840
    assert m(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
    with pytest.raises(ValueError, match="unknown model variant"):
        build_model("vgg")


def test_paper_init():
    torch.manual_seed(0)
    layers = AlexNet(init="paper").layers()
    for name, layer in layers.items():
        assert abs(layer.weight.std().item() - 0.01) < 0.001, name
        assert abs(layer.weight.mean().item()) < 0.001
        expected = 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert torch.all(layer.bias == expected), name


def test_caffe_and_kaiming_inits():
    torch.manual_seed(0)
    caffe = AlexNet(init="caffe").layers()
    assert abs(caffe["fc6"].weight.std().item() - 0.005) < 0.0005
    assert torch.all(caffe["conv2"].bias == 0.1) and torch.all(caffe["conv1"].bias == 0)
    kaiming = AlexNet(init="kaiming").layers()
    fan_in = 3 * 11 * 11
    assert abs(kaiming["conv1"].weight.std().item() - math.sqrt(2 / fan_in)) < 0.01
    assert all(torch.all(layer.bias == 0) for layer in kaiming.values())
    with pytest.raises(ValueError, match="unknown init"):
        AlexNet(init="xavier")


def test_step_schedule():
    lr = [learning_rate(0.01, e, schedule="step", milestones=(30, 60, 80)) for e in (0, 29, 30, 59, 60, 80, 89)]
    assert lr == pytest.approx([0.01, 0.01, 0.001, 0.001, 1e-4, 1e-5, 1e-5])


def test_plateau_schedule_is_a_pure_function_of_history():
    improving = [0.9, 0.8, 0.7, 0.6]
    assert plateau_drops(improving, patience=2) == 0
    flat = [0.9, 0.8, 0.8, 0.8]  # two epochs without improvement
    assert plateau_drops(flat, patience=2) == 1
    assert learning_rate(0.01, 4, schedule="plateau", val_errors=flat, patience=2) == pytest.approx(0.001)
    assert learning_rate(0.01, 3, schedule="plateau", val_errors=flat, patience=2) == pytest.approx(0.01)
    assert plateau_drops([0.5] * 40, patience=2) == 3  # three times at most
    assert learning_rate(0.01, 5, schedule="constant") == 0.01
    with pytest.raises(ValueError):
        learning_rate(0.01, 0, schedule="cosine")


def test_paper_update_rule():
    w0 = torch.tensor([1.0, -2.0])
    p = nn.Parameter(w0.clone())
    opt = PaperSGD([p], lr=0.1, momentum=0.9, weight_decay=5e-4)
    grads = [torch.tensor([0.5, 0.25]), torch.tensor([-1.0, 2.0])]
    v, w = torch.zeros(2), w0.clone()
    for step, g in enumerate(grads):
        lr = 0.1 if step == 0 else 0.01  # a drop in between
        opt.param_groups[0]["lr"] = lr
        p.grad = g.clone()
        opt.step()
        v = 0.9 * v - 0.0005 * lr * w - lr * g
        w = w + v
        torch.testing.assert_close(p.data, w)


def test_checkpoint_round_trip_and_arch_check(tmp_path):
    m = AlexNet(num_classes=10)
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": m.state_dict(), "arch": {"variant": "paper", "num_classes": 10}})
    ckpt = load_checkpoint(path)
    require_arch(ckpt, path, variant="paper", num_classes=10)
    with pytest.raises(CheckpointError, match="num_classes.*10.*num_classes.*1000"):
        require_arch(ckpt, path, variant="paper", num_classes=1000)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


class MeanColour(nn.Module):
    """A fixed 'model' whose logits depend on each crop, so 10-crop averaging is visible."""

    def forward(self, x):
        m = x.mean((2, 3))  # [N, 3]
        return torch.stack([m[:, 0] * 3, m[:, 1] * 2, m[:, 2], -m[:, 0]], dim=1)


def test_ten_crop_average_matches_manual():
    torch.manual_seed(0)
    model = MeanColour()
    images = torch.randn(5, 10, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 3, 0])
    dist = Dist(0, 0, 1, torch.device("cpu"))
    result = evaluate(model, [(images, labels)], dist)
    probs = torch.stack([torch.softmax(model(images[i]), -1).mean(0) for i in range(5)])
    manual_top1 = (probs.argmax(1) == labels).float().mean().item()
    assert result["images"] == 5
    assert result["top1_err"] == pytest.approx(1 - manual_top1)
    top5 = (probs.topk(4, 1).indices == labels[:, None]).any(1).float().mean().item()  # 4 classes: top-5 = all
    assert result["top5_err"] == pytest.approx(1 - top5) == 0
    assert result["loss"] == pytest.approx(-probs[torch.arange(5), labels].log().mean().item(), rel=1e-5)


def test_evaluate_counts_every_image_once():
    model = MeanColour()
    dist = Dist(0, 0, 1, torch.device("cpu"))
    batches = [(torch.randn(b, 3, 8, 8), torch.zeros(b, dtype=torch.int64)) for b in (4, 4, 3)]
    assert evaluate(model, batches, dist)["images"] == 11


def test_linear_scaling_and_warmup():
    from model.schedule import scaled_lr, warmup_lr, warmup_start
    assert scaled_lr(0.01, 1024, "linear") == pytest.approx(0.08)  # 0.01 at 128, x8
    assert scaled_lr(0.01, 1024, "none") == 0.01
    assert scaled_lr(0.01, 64, "linear") == pytest.approx(0.005)
    with pytest.raises(ValueError, match="unknown lr scaling"):
        scaled_lr(0.01, 128, "sqrt")
    start = warmup_start(0.01, 0.08)
    assert start == 0.01 and warmup_start(0.01, 0.01) == 0.0
    ramp = [warmup_lr(0.08, s, 4, start) for s in range(6)]  # 4 warm-up steps, then the target
    assert ramp == pytest.approx([0.0275, 0.045, 0.0625, 0.08, 0.08, 0.08])
    assert all(a < b for a, b in zip(ramp[:4], ramp[1:4]))
    assert warmup_lr(0.01, 0, 0) == 0.01  # no warm-up
    assert [warmup_lr(0.01, s, 2) for s in range(3)] == pytest.approx([0.005, 0.01, 0.01])
