"""The from-scratch CNNs of the series as plain nn.Modules (registered in lib.models):
study 000's PlainCNN (SmallCNN, WiderCNN; with BN and two convs a stage, the VGG-style
net) and study 004's Conv4Net."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class PlainCNN(nn.Module):
    """Stages of `convs` conv3x3(-BN)-ReLU then max-pool; global average pool, dropout, linear.
    convs=1 without BN is study 000's SmallCNN/WiderCNN; convs=2 with BN the VGG-style net
    (the usual strong from-scratch design for 48 px FER, at about Conv4Net's compute)."""

    def __init__(self, widths: Sequence[int], num_classes: int, in_chans: int = 3,
                 dropout: float = 0.3, convs: int = 1, bn: bool = False):
        super().__init__()
        layers, c = [], in_chans
        for w in widths:
            for _ in range(convs):
                # a conv followed by BN needs no bias of its own
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=not bn),
                           *([nn.BatchNorm2d(w)] if bn else []), nn.ReLU(inplace=True)]
                c = w
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Conv4Net(nn.Module):
    """Study 004's CNN: conv-BN-ReLU(-pool) x len(filters), adaptive grid, FC 512-256."""

    def __init__(self, num_classes: int, in_chans: int = 3, filters: Sequence[int] = (
            64, 128, 256, 512), kernel_size: int = 3, dropout: float = 0.2, grid: int = 3,
                 fc: Sequence[int] = (512, 256)):
        super().__init__()
        layers, c = [], in_chans
        for i, f in enumerate(filters):
            layers += [nn.Conv2d(c, f, kernel_size, padding="same"), nn.BatchNorm2d(f),
                       nn.ReLU(inplace=True)]
            if i < len(filters) - 1:  # pool after all but the last conv
                layers.append(nn.MaxPool2d(2))
            layers.append(nn.Dropout(dropout))
            c = f
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(grid), nn.Flatten())
        head, d = [], c * grid * grid
        for h in fc:
            head += [nn.Linear(d, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            d = h
        self.head = nn.Sequential(*head, nn.Linear(d, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
