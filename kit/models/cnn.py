"""The resolution-adaptive CNN of the published ChestMNIST study."""

from __future__ import annotations

import torch
from torch import nn

from kit.models.registry import register_model

CNN_NAME = "chestmnist_cnn"


class ChestMNISTCNN(nn.Module):
    """conv-BN-ReLU-maxpool-dropout blocks whose count grows with resolution.

    Two blocks at 28/64 px, three at 128, four at 224 and above; global average + max pooling,
    dropout and a linear head. Small on purpose: the published ChestMNIST study found deeper is not better.
    """

    def __init__(self, num_classes: int, image_size: int, in_chans: int = 3, drop_rate: float = 0.2, width: int = 32):
        super().__init__()
        n_blocks = cnn_depth(image_size)
        layers: list[nn.Module] = []
        chans = in_chans
        for i in range(n_blocks):
            out = width * 2**i
            layers += [
                nn.Conv2d(chans, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
                nn.Dropout2d(drop_rate / 2),
            ]
            chans = out
        self.features = nn.Sequential(*layers)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(2 * chans, num_classes)
        self.num_features = 2 * chans

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        # global average and max pooling side by side: the average sees diffuse changes (a bigger
        # heart, darker lungs), the max a small bright or dark finding anywhere in the image
        x = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return self.fc(self.head_drop(x))


def cnn_depth(image_size: int) -> int:
    """Number of conv blocks for a resolution: 2 up to 64 px, 3 up to 128 px, 4 above."""
    if image_size <= 64:
        return 2
    if image_size <= 128:
        return 3
    return 4


@register_model(CNN_NAME)
def chestmnist_cnn(mcfg, num_classes: int) -> nn.Module:
    return ChestMNISTCNN(num_classes, mcfg.image_size, mcfg.in_chans, mcfg.dropout, mcfg.cnn_width)
