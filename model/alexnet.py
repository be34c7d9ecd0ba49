"""AlexNet as in Krizhevsky, Sutskever & Hinton (2012): a plain nn.Module, no I/O, no devices, no config.

The paper's two GPU columns are the `groups=2` of conv2, conv4 and conv5 (each half sees only its own half of
the previous layer); conv3 and the fully connected layers see both. 60,965,224 parameters with 1000 classes.

LRN: PyTorch's LocalResponseNorm divides alpha by `size` (Caffe's convention, used by Caffe's AlexNet);
the paper's formula does not. With k = 2 the two differ little; `alpha` is kept at the paper's 1e-4.
"""
from __future__ import annotations

import torch
from torch import nn

INITS = ("paper", "caffe", "kaiming")
VARIANTS = ("paper", "torchvision")


class AlexNet(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, init: str = "paper"):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; use one of {INITS}")
        self.features = nn.Sequential(                                  # x: [B, 3, 224, 224]
            nn.Conv2d(3, 96, 11, stride=4, padding=2), nn.ReLU(inplace=True),        # conv1 [B, 96, 55, 55]
            nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),
            nn.MaxPool2d(3, stride=2),                                               # [B, 96, 27, 27]
            nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True),       # conv2 [B, 256, 27, 27]
            nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),
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
    """torchvision's single-column variant (Krizhevsky 2014, "one weird trick"): 64-192-384-256-256, no LRN."""

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


def build_model(variant: str = "paper", num_classes: int = 1000, init: str = "paper", dropout: float = 0.5) -> nn.Module:
    if variant == "paper":
        return AlexNet(num_classes, dropout, init)
    if variant == "torchvision":
        return AlexNetOneColumn(num_classes, dropout, init)
    raise ValueError(f"unknown model variant {variant!r}; use one of {VARIANTS}")
