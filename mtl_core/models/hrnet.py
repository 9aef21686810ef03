"""A small HRNet (Wang et al., "Deep High-Resolution Representation Learning", TPAMI 2020) for the CPU.

    stem: 3x3 conv stride 2, 3x3 conv stride `stem_stride` / 2, `stem_blocks` BasicBlocks
    branches 0 and 1 from the stem, then exchange units; before the units of stage k (k = 3, 4) a new,
    coarser branch k-1 grows out of the coarsest one (3x3 conv, stride 2):

        stage 2: [unit] x num_modules[0] on 2 branches   stage 3: on 3   stage 4: on 4

    exchange unit: every branch runs `blocks` BasicBlocks at its own resolution, then every branch
    receives all the others, resampled, and sums them (HRNet's "repeated multi-scale fusion"):
    from a coarser branch 1x1 conv + BN then nearest upsampling, from a finer one a chain of stride-2
    3x3 convs (BN, ReLU between them, BN after the last), then ReLU.

The output is the four branches after the last unit: every map is an end-of-network feature that has
been through the same depth and has exchanged information with every resolution (a sequential CNN's
finer maps are its shallower ones). The layout follows HRNet's code (timm's `HighResolutionNet`, with
BasicBlocks in stage 1): `HRNet((18, 36, 72, 144), stem_width=64, stem_stride=4, stem_blocks=2,
num_modules=(1, 3, 2), blocks=2)` has HRNet-W18-small-v2's layers and parameter count.

Speed on a CPU at small widths is a matter of operator calls, so the layers that read the same map run
as one convolution: a branch's 1x1 convs towards all finer branches are one conv (output channels
concatenated, then split and upsampled), and so are the first stride-2 convs of its paths towards the
coarser ones. BatchNorm is per channel, so this is HRNet's fusion exactly, with its parameter count.

The input is converted to channels-last memory layout (NHWC), so the maps and every layer after them
(the task heads) run in it: on a CPU oneDNN runs these convolutions faster in that layout (measured,
benchmarks/backbones.py: ~1.3x for the backbone, ~1.4x for the MTL baseline's training step); the values
are the same. `channels_last=False` keeps the input's layout.

Parameters live with the resolution they read: `stages[s]` holds branch s's entry conv, its blocks and
its fusion paths towards the other branches; `stem` holds the layers every branch shares. Per-scale
analyses (affinity.scale_parameter_groups) thus find a group of layers per scale, as on the
sequential backbones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .heads import Backbone, BasicBlock


def conv_bn(cin: int, cout: int, kernel_size: int = 3, stride: int = 1, relu: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


class Branch(nn.Module):
    """One resolution. `enter` creates it; in unit u, `blocks[u]` refine it, `up[u]` (1x1 conv + BN to
    all finer branches' widths at once) and `down[u]` (the first stride-2 conv of every path to a coarser
    branch at once, then the rest of each longer path) carry it to the others."""

    def __init__(self, index: int, widths: Sequence[int], enter_channels: int, enter_stride: int,
                 units: Sequence[int], blocks: int):
        super().__init__()
        self.index, self.widths = index, list(widths)
        self.enter = nn.Sequential(*conv_bn(enter_channels, widths[index], 3, enter_stride))
        self.blocks, self.up, self.down = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
        c = widths[index]
        for u, branches in enumerate(units):
            if index >= branches:
                continue
            self.blocks[str(u)] = nn.Sequential(*[BasicBlock(c, c) for _ in range(blocks)])
            if index > 0:
                self.up[str(u)] = nn.Sequential(*conv_bn(c, sum(widths[:index]), 1, relu=False))
            if index + 1 < branches:  # to branch t: t - index stride-2 convs, the last one to t's width
                longer = range(index + 2, branches)
                first = conv_bn(c, widths[index + 1] + c * len(longer), 3, 2, relu=False)
                rest = [nn.Sequential(*[m for _ in range(t - index - 2) for m in conv_bn(c, c, 3, 2)],
                                      *conv_bn(c, widths[t], 3, 2, relu=False)) for t in longer]
                self.down[str(u)] = nn.ModuleList([nn.Sequential(*first), *rest])

    def send(self, x: torch.Tensor, unit: int, sizes: Sequence[torch.Size]) -> dict[int, torch.Tensor]:
        """This branch's contribution to every other branch of unit `unit` ({branch: map})."""
        out, u, i, c = {}, str(unit), self.index, self.widths[self.index]
        if u in self.up:  # one 1x1 conv for all finer branches, split, then upsampled
            for t, y in enumerate(self.up[u](x).split(self.widths[:i], dim=1)):
                out[t] = F.interpolate(y, size=sizes[t], mode="nearest")
        if u in self.down:  # one stride-2 conv: the next branch's input + the first step of longer paths
            first, *rest = self.down[u]
            direct, *steps = first(x).split([self.widths[i + 1]] + [c] * len(rest), dim=1)
            out[i + 1] = direct
            for k, (y, path) in enumerate(zip(steps, rest, strict=True)):
                out[i + 2 + k] = path(F.relu(y))
        return out


class HRNet(Backbone):
    """Four parallel branches of `widths` at strides stem_stride * (1, 2, 4, 8), exchanging information
    `sum(num_modules)` times; `backbone(images)` returns the four branch maps, finest first."""

    def __init__(self, widths: Sequence[int] = (8, 16, 32, 64), stem_width: int = 16, stem_stride: int = 2,
                 stem_blocks: int = 1, num_modules: Sequence[int] = (1, 1, 1), blocks: int = 1,
                 channels_last: bool = True):
        super().__init__()
        if len(widths) != 4 or len(num_modules) != 3 or stem_stride not in (2, 4):
            raise ValueError(f"widths={tuple(widths)}, num_modules={tuple(num_modules)}, "
                             f"stem_stride={stem_stride}: expected 4 widths, 3 module counts (stages 2-4) "
                             "and a stem stride of 2 or 4")
        self.stem = nn.Sequential(*conv_bn(3, stem_width, 3, 2),
                                  *conv_bn(stem_width, stem_width, 3, stem_stride // 2),
                                  *[BasicBlock(stem_width, stem_width) for _ in range(stem_blocks)])
        self.units = [2] * num_modules[0] + [3] * num_modules[1] + [4] * num_modules[2]
        self.stages = nn.ModuleList([
            Branch(s, widths, stem_width if s < 2 else widths[s - 1], 1 if s == 0 else 2, self.units, blocks)
            for s in range(4)])
        self.channels = list(widths)
        self.strides = [stem_stride * 2**s for s in range(4)]
        self.channels_last = channels_last

    def exchange(self, maps: list[torch.Tensor], unit: int) -> list[torch.Tensor]:
        """One exchange unit: every branch's blocks, then every branch sums what all the others send."""
        maps = [self.stages[s].blocks[str(unit)](m) for s, m in enumerate(maps)]
        received = [[m] for m in maps]
        sizes = [m.shape[-2:] for m in maps]
        for s, m in enumerate(maps):
            for t, y in self.stages[s].send(m, unit, sizes).items():
                received[t].append(y)
        return [F.relu(sum(r[1:], r[0])) for r in received]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(images.contiguous(memory_format=torch.channels_last) if self.channels_last else images)
        maps = [self.stages[0].enter(x), self.stages[1].enter(x)]
        for u, branches in enumerate(self.units):
            while len(maps) < branches:  # a new, coarser branch grows out of the coarsest one
                maps.append(self.stages[len(maps)].enter(maps[-1]))
            maps = self.exchange(maps, u)
        return maps
