"""Backbones behind one multi-scale contract (like timm's `features_only`).

`backbone(images)` returns a list of 4 feature maps, finest first; `backbone.channels` and
`backbone.strides` describe them. `backbone.fuse(maps)` is HRNetV2's representation of them (every map
upsampled to the finest and concatenated, `backbone.fused_channels` wide): what the MTL baseline's heads
and PAD-Net read, as in MTI-Net's code (HRNet's fused output; 270 channels for HRNet-W18).

- `hrnet`: a small in-house HRNet (hrnet.py): four parallel branches that exchange information after
  every unit, so every map is an end-of-network feature. At the benchmark's 64x64 the pyramid starts at
  stride 2 (`stem_stride=2`: maps 32, 16, 8 and 4 pixels wide); `stem_stride=4` is HRNet's 4 ... 32.
- `cnn`: a small plain CNN (strides 4 ... 32): its finer maps are its shallower ones. The detectors'
  backbone (ROCK reads one map, the last; `output_stride` keeps it at 1/16, 1/8 or 1/4 by dilation).
- `hrnet_w18_small_v2`: the MTI-Net paper's backbone, from timm (random init unless `checkpoint`).
- `resnet18` / `resnet50`: torchvision; `dilated=True` keeps the last stage at stride 16 as ROCK does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .heads import Backbone
from .hrnet import HRNet


def conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SimpleCNN(Backbone):
    """A stem to 1/4 followed by three stride-2 stages: maps at 1/4, 1/8, 1/16, 1/32.

    `output_stride` (32, 16, 8 or 4) keeps the last map at that stride: the stages that would go
    below it keep stride 1 and dilate their 3x3 convolutions instead, by 2 for each stride-2 they skip
    (DeepLab's output stride; torchvision's `replace_stride_with_dilation`), so the receptive field
    grows as without dilation. `dilated=True` is output_stride 16, as ROCK's dilated ResNet. A
    detector on a 128x128 image with output_stride 4 gets a 32x32 base map, the relative grid of ROCK's
    30x40 base map on NYUv2's 480x640 images.
    """

    def __init__(self, widths: tuple[int, int, int, int] = (32, 64, 128, 256), blocks_per_stage: int = 2,
                 dilated: bool = False, output_stride: int | None = None):
        super().__init__()
        if output_stride is None:
            output_stride = 16 if dilated else 32
        elif dilated and output_stride != 16:
            raise ValueError(f"dilated=True is output_stride=16; got output_stride={output_stride}")
        if output_stride not in (4, 8, 16, 32):
            raise ValueError(f"output_stride={output_stride}: choose 4, 8, 16 or 32")
        half = widths[0] // 2
        self.stem = nn.Sequential(conv_bn_relu(3, half, 2), conv_bn_relu(half, widths[0], 2))
        stages, cin, stride_so_far = [], widths[0], 4
        self.strides = []
        for i, cout in enumerate(widths):
            nominal = 4 * 2 ** i  # the stage's stride without dilation
            stride = 2 if i > 0 and nominal <= output_stride else 1
            stride_so_far *= stride
            dilation = nominal // stride_so_far
            layers = [conv_bn_relu(cin, cout, stride, dilation)]
            layers += [conv_bn_relu(cout, cout, dilation=dilation) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*layers))
            self.strides.append(stride_so_far)
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.channels = list(widths)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class TimmHRNet(Backbone):
    """timm's HRNet with `features_only=True, feature_location=''`: its 4 branches (18/36/72/144 ch)."""

    def __init__(self, name: str = "hrnet_w18_small_v2", checkpoint: str | None = None):
        super().__init__()
        import timm

        if checkpoint is not None and not Path(checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint={checkpoint!r}: no such file (weights are never downloaded)")
        self.body = timm.create_model(name, pretrained=checkpoint is not None, features_only=True,
                                      feature_location="", out_indices=(1, 2, 3, 4),
                                      pretrained_cfg_overlay={"file": checkpoint} if checkpoint else None)
        self.channels = list(self.body.feature_info.channels())
        self.strides = list(self.body.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))


class TorchvisionResNet(Backbone):
    """torchvision ResNet layers 1-4; `dilated=True` replaces the last stride by dilation (stride 16)."""

    def __init__(self, name: str = "resnet50", dilated: bool = False, checkpoint: str | None = None):
        super().__init__()
        import torchvision

        dilation = [False, False, dilated] if name == "resnet50" else None
        net = getattr(torchvision.models, name)(weights=None, replace_stride_with_dilation=dilation)
        if name == "resnet18" and dilated:
            # BasicBlock ResNets do not support dilation in torchvision: dilate layer4 by hand
            net.layer4[0].conv1.stride = (1, 1)
            net.layer4[0].downsample[0].stride = (1, 1)
            for block in net.layer4:
                for conv in (block.conv1, block.conv2):
                    if conv.stride == (1, 1):
                        conv.dilation, conv.padding = (2, 2), (2, 2)
        if checkpoint is not None:
            if not Path(checkpoint).is_file():
                raise FileNotFoundError(f"checkpoint={checkpoint!r}: no such file "
                                        "(weights are never downloaded)")
            net.load_state_dict(torch.load(checkpoint, map_location="cpu"))
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        widths = [64, 128, 256, 512] if name == "resnet18" else [256, 512, 1024, 2048]
        self.channels = widths
        self.strides = [4, 8, 16, 16 if dilated else 32]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


BACKBONES = {
    "hrnet": HRNet,
    "cnn": SimpleCNN,
    "hrnet_w18_small_v2": lambda **kw: TimmHRNet("hrnet_w18_small_v2", **kw),
    "resnet18": lambda **kw: TorchvisionResNet("resnet18", **kw),
    "resnet50": lambda **kw: TorchvisionResNet("resnet50", **kw),
}


def build_backbone(name: str, **options) -> nn.Module:
    if name not in BACKBONES:
        raise ValueError(f"backbone={name!r}: unknown backbone; choose from {sorted(BACKBONES)}")
    return BACKBONES[name](**options)
