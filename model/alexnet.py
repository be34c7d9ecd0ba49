"""AlexNet as in Krizhevsky, Sutskever & Hinton (2012): a plain nn.Module, no I/O, no devices, no config.

The paper's two GPU columns are the `groups=2` of conv2, conv4 and conv5 (each half sees only its own half of
the previous layer); conv3 and the fully connected layers see both. 60,965,224 parameters with 1000 classes.

LRN (model/lrn.py): `lrn="paper"` divides by (2 + 1e-4 * sum of squares over 5 maps)^0.75 as section 3.3
writes it, each window inside its own column; `lrn="caffe"` is Caffe's bvlc_alexnet: alpha / 5 on the sum
(PyTorch's LocalResponseNorm too), windows across all maps.
"""
from __future__ import annotations

import torch
from torch import nn

from model.lrn import LRN

INITS = ("paper", "caffe", "kaiming")
VARIANTS = ("paper", "torchvision")
LRNS = ("paper", "caffe")
COLUMNS = 2


def response_norm(lrn: str) -> LRN:
    """The LRN after conv1 and conv2. Columns: in Krizhevsky's 2-GPU ImageNet net (cuda-convnet2,
    layers/layers-imagenet-2gpu-model.cfg) rnorm1a/rnorm1b take conv1a/conv1b (48 maps each) and
    rnorm2a/rnorm2b take conv2a/conv2b (128 each): no window crosses the column boundary. (That code's
    layer.py divides `scale` by `size` for cmrnorm, Caffe's convention; "paper" follows the paper's text.)"""
    if lrn == "paper":
        return LRN(5, alpha=1e-4, beta=0.75, k=2.0, convention="paper", groups=COLUMNS)
    if lrn == "caffe":
        return LRN(5, alpha=1e-4, beta=0.75, k=2.0, convention="caffe", groups=1)
    raise ValueError(f"unknown LRN {lrn!r}; use one of {LRNS}")


class AlexNet(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, init: str = "paper", lrn: str = "paper"):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; use one of {INITS}")
        self.features = nn.Sequential(                                  # x: [B, 3, 224, 224]
            nn.Conv2d(3, 96, 11, stride=4, padding=2), nn.ReLU(inplace=True),        # conv1 [B, 96, 55, 55]
            response_norm(lrn),
            nn.MaxPool2d(3, stride=2),                                               # [B, 96, 27, 27]
            nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True),       # conv2 [B, 256, 27, 27]
            response_norm(lrn),
            nn.MaxPool2d(3, stride=2),                                               # [B, 256, 13, 13]
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),                # conv3 [B, 384, 13, 13]
            nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(inplace=True),      # conv4 [B, 384, 13, 13]
            nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(inplace=True),      # conv5 [B, 256, 13, 13]
            nn.MaxPool2d(3, stride=2),                                               # [B, 256, 6, 6]
        )
        self.classifier = nn.Sequential(                                             # [B, 9216]
            nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),  # fc6
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),         # fc7
            nn.Linear(4096, num_classes),                                               # fc8 [B, classes]
        )
        self.init_weights(init)

    def layers(self) -> dict[str, nn.Module]:
        """The weighted layers by the paper's names: conv1..conv5, fc6..fc8."""
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        fcs = [m for m in self.classifier if isinstance(m, nn.Linear)]
        return {**{f"conv{i + 1}": m for i, m in enumerate(convs)}, **{f"fc{i + 6}": m for i, m in enumerate(fcs)}}

    def init_weights(self, init: str) -> None:
        """paper: weights N(0, 0.01), biases 1 in conv2, conv4, conv5, fc6, fc7 and 0 elsewhere.
        caffe: as Caffe's bvlc_alexnet (fc6/fc7 weights N(0, 0.005), those biases 0.1).
        kaiming: He-normal weights for the ReLU layers, fc8 N(0, 0.01), biases 0 (trains from the start)."""
        ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
        for name, m in self.layers().items():
            if init == "kaiming" and name != "fc8":
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            else:
                std = 0.005 if init == "caffe" and name in ("fc6", "fc7") else 0.01
                nn.init.normal_(m.weight, 0.0, std)
            bias = {"paper": 1.0, "caffe": 0.1, "kaiming": 0.0}[init] if name in ones else 0.0
            nn.init.constant_(m.bias, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(x, 1))


class AlexNetOneColumn(nn.Module):
    """torchvision's single-column variant (Krizhevsky 2014, "one weird trick"): 64-192-384-256-256, no LRN.
    Module positions follow torchvision.models.AlexNet, so its state dicts load with strict=True."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, init: str = "kaiming"):
        super().__init__()
        self.features = nn.Sequential(                                               # [B, 3, 224, 224]
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),  # [B, 64, 27, 27]
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),         # [B, 192, 13, 13]
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),        # [B, 256, 6, 6]
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )
        AlexNet.init_weights(self, init)  # same rules, by layer position

    layers = AlexNet.layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def build_model(variant: str = "paper", num_classes: int = 1000, init: str = "paper", dropout: float = 0.5,
                lrn: str = "paper") -> nn.Module:
    """lrn applies to the paper variant (torchvision's has no LRN)."""
    if variant == "paper":
        return AlexNet(num_classes, dropout, init, lrn)
    if variant == "torchvision":
        return AlexNetOneColumn(num_classes, dropout, init)
    raise ValueError(f"unknown model variant {variant!r}; use one of {VARIANTS}")
