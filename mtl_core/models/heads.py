"""Building blocks shared by the model families (one definition each)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..resize import resize_bilinear


class BasicBlock(nn.Module):
    """ResNet basic block: 3x3-BN-ReLU-3x3-BN + shortcut (1x1 conv + BN when the width changes, or always
    with `project=True`).

    `groups=N` makes it N independent blocks side by side, one per channel group (input and output
    channels are totals, split in N equal groups): grouped convolutions never mix groups and BatchNorm is
    per channel, so this is exactly N separate BasicBlocks with the same parameter count -- in a third
    of the operator calls, which is what costs most on a CPU at small widths (the per-task branches of
    PAD-Net / MTI-Net use it, one group per task)."""

    def __init__(self, cin: int, cout: int, groups: int = 1, project: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False, groups=groups)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False, groups=groups)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (nn.Identity() if cin == cout and not project else nn.Sequential(
            nn.Conv2d(cin, cout, 1, bias=False, groups=groups), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x), inplace=True)


class SqueezeExcitation(nn.Module):
    """Channel re-weighting: GAP -> Linear C->C/r -> ReLU -> Linear -> sigmoid (Hu et al. 2018)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(x.mean(dim=(2, 3)))
        return x * weights[:, :, None, None]


class DenseHead(nn.Module):
    """1x1 conv -> BN -> ReLU -> 1x1 conv to the task's channels (HRNet / MTI-Net output head)."""

    def __init__(self, cin: int, cout: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or cin
        self.body = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                                  nn.ReLU(inplace=True), nn.Conv2d(hidden, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SceneHead(nn.Module):
    """Global average pooling -> linear classifier, for image-level tasks (scene type)."""

    def __init__(self, cin: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


def upsample_to(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear upsampling of features, which convolutions read next: F.interpolate keeps them
    channels_last, and its backward is fast when the gradient comes back channels_last too."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def prediction_to(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear upsampling of a prediction to the image size, which a loss reads next: the loss's
    gradient comes back NCHW, and F.interpolate's backward from an NCHW gradient into a channels_last
    input is slow on CPU; mtl_core.resize does the same resize with matrix products, 3-5x faster at
    these shapes (benchmarks/resize.py)."""
    return resize_bilinear(x, size)


def concat_scales(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """HRNetV2 representation: upsample every map to the first (finest) one's size and concatenate."""
    size = maps[0].shape[-2:]
    return torch.cat([maps[0]] + [upsample_to(m, size) for m in maps[1:]], dim=1)


class Backbone(nn.Module):
    """What every backbone shares (models/backbones.py): `channels` and `strides` of its 4 maps (set by
    each backbone) and their fused map, HRNetV2's output that the MTL baseline and PAD-Net read."""

    channels: list[int]
    strides: list[int]

    @property
    def fused_channels(self) -> int:
        return sum(self.channels)

    def fuse(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """All maps upsampled (bilinear) to the finest and concatenated (`fused_channels` wide)."""
        return concat_scales(maps)
