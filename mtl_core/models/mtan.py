"""MTAN (Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019): soft sharing
by task-specific attention over one shared network.

Hard vs soft sharing. Hard parameter sharing: the tasks share the same layers and own only their
heads; the MTL baseline (baselines.py) is that, so whatever the backbone computes, every task receives
unchanged. Soft sharing: each task has features of its own, computed by task-specific parameters that
are tied to the other tasks' (by combining the task networks, or, as here, by reading one shared
network). MTAN keeps one shared backbone (the "global" features, trained by every task's loss), and
each task selects from it with its own soft masks: at every scale s it computes a mask a_t^s in (0, 1),
one value per channel and pixel, and works on

    â_t^s = a_t^s ⊙ p^s          (the paper's Eq. 1, â = a ⊙ p; p^s = the backbone map of scale s)

so a task can damp features where they do not help it instead of receiving them unchanged. Only the
small attention modules are per task: the parameter cost of soft sharing here.

    backbone --> maps p^0 (finest) ... p^3 --+--> per task t, from fine to coarse:
                                             |    a_t^s = g_t^s([p^s ; pool(f^s(â_t^(s-1)))])  (s > 0)
                                             |    a_t^0 = g_t^0(p^0),     â_t^s = a_t^s ⊙ p^s
    â_t^0 ... â_t^3 --> fuse (upsample to the finest + concat, as the baseline) --> DenseHead --> upsample
    â_t^3 (coarsest) --> SceneHead (image-level tasks such as `scene`)

g_t^s (per task and scale): 1x1 conv -> BN -> ReLU -> 1x1 conv -> BN -> sigmoid, hidden width = the
scale's width, as the paper's attention modules. f^s (the paper's shared feature extractor between
attention modules): a 1x1 conv shared by all tasks -> BN (per task) -> ReLU to the next scale's width,
then max pooling to its resolution. The heads are the baseline's (`SharedEncoderMTL`, same `head_width`), so
MTAN and the baseline differ only in the attention.

How this differs from the paper: there, attention modules sit inside every block of a SegNet encoder and
decoder (the mask reads features from inside the block and multiplies its output). Here the backbone
is the studies' (any backbone of the features_only contract: maps, channels, strides), used unchanged,
and attention acts only on its output maps, one module per task and scale, from the finest scale to
the coarsest as in the paper's encoder; there is no attended decoder, the baseline's fused head takes
its place. The study backbone's maps are end-of-network features (hrnet.py), so the masks select from
what the whole shared network computed.

Size at the study settings (hrnet, widths 8/16/32/64, 64x64 images, semseg + depth + normals + edge,
`mtl_core.models.summary.model_summary`): 0.355 M parameters and 0.0893 GMACs, 1.25x the MTL
baseline's parameters (0.284 M) and 1.05x its GMACs (0.0849): the attention modules are 1x1
convolutions on the backbone's narrow maps, while the heads, at the finest scale, hold most of the
compute. A training step takes longer than the GMACs say (about 1.5x the baseline's on one CPU thread,
batch 16, measured on a shared machine): each task has its own fused map to upsample, concatenate and
backpropagate through, where the baseline has one.

`return_features=True` adds out["features"] = {"backbone": [4 maps], "masks": {task: [mask per scale,
finest first]}, "attended": {task: [â per scale]}}.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..tasks import TaskSpec
from .baselines import SharedEncoderMTL, require_task_kinds
from .heads import prediction_to
from .registry import check_input, register_model


class TaskAttention(nn.Module):
    """The attention modules g_t of all T tasks at one scale (and f, when a finer scale feeds it).

    The T modules run side by side as grouped 1x1 convolutions, one channel group per task: grouped
    convolutions never mix groups and BatchNorm is per channel, so this is T separate modules with
    their parameter count, in fewer operator calls (heads.BasicBlock says why that matters on a CPU).

    `forward(shared, previous)`: shared (B, C, H, W) backbone map; previous (B, T·C', H', W') the
    attended features of the finer scale (task-major), or None at the finest. Returns (attended,
    masks), both (B, T·C, H, W), task-major.
    """

    def __init__(self, tasks: int, channels: int, previous: int | None = None):
        super().__init__()
        self.tasks = tasks
        # f's convolution is shared by all tasks; its BatchNorm is per task (channel group), so that a
        # task's batch statistics, hence its gradients, never depend on another task's features, as
        # when f runs on each task separately
        self.shared = self.shared_norm = None
        if previous is not None:
            self.shared = nn.Conv2d(previous, channels, 1, bias=False)
            self.shared_norm = nn.BatchNorm2d(tasks * channels)
        inputs = channels * (1 if previous is None else 2)
        self.mask = nn.Sequential(
            nn.Conv2d(tasks * inputs, tasks * channels, 1, groups=tasks, bias=False),
            nn.BatchNorm2d(tasks * channels), nn.ReLU(inplace=True),
            nn.Conv2d(tasks * channels, tasks * channels, 1, groups=tasks, bias=False),
            nn.BatchNorm2d(tasks * channels), nn.Sigmoid())

    def forward(self, shared: torch.Tensor, previous: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        n, (b, c, h, w) = self.tasks, shared.shape
        # kept in the backbone's memory layout (hrnet: channels-last), which repeat and cat drop: on a CPU the
        # convolutions and the heads' upsampling run several times slower in the other one
        layout = (torch.channels_last if shared.is_contiguous(memory_format=torch.channels_last)
                  else torch.contiguous_format)
        repeated = shared.repeat(1, n, 1, 1).contiguous(memory_format=layout)  # group t: task t's copy
        if previous is None:
            x = repeated
        else:  # every task's attended map through the same convolution: tasks folded into the batch
            prev = self.shared(previous.reshape(b * n, -1, *previous.shape[-2:]))
            prev = F.relu(self.shared_norm(prev.reshape(b, n * c, *prev.shape[-2:])), inplace=True)
            prev = F.adaptive_max_pool2d(prev, (h, w)).reshape(b, n, c, h, w)
            x = torch.cat([shared.unsqueeze(1).expand(b, n, c, h, w), prev], dim=2).flatten(1, 2)
            x = x.contiguous(memory_format=layout)
        masks = self.mask(x)
        return masks * repeated, masks


class MTAN(SharedEncoderMTL):
    """Soft sharing: the baseline's backbone and heads, with per-task attention on every backbone map.

    Accepts the tasks the MTL baseline accepts (dense and image-level); `head_width` as there."""

    def __init__(self, tasks: dict[str, TaskSpec], backbone: nn.Module, head_width: int | None = None):
        require_task_kinds(tasks, ("dense", "image"), "mtan", hint=" (build 'rock' or 'ssd' for detection)")
        super().__init__(tasks, backbone, head_width=head_width)
        self.tasks = list(tasks)
        widths: Sequence[int] = backbone.channels
        previous = [None, *widths[:-1]]  # the finest scale has no finer one to read
        self.attention = nn.ModuleList([TaskAttention(len(self.tasks), c, p)
                                        for c, p in zip(widths, previous, strict=True)])
        # the fused map's channels: scale by scale, task by task within a scale
        self.fused_split = [c for c in widths for _ in self.tasks]

    def forward(self, images: torch.Tensor, return_features: bool = False) -> dict:
        check_input(images)
        maps = self.backbone(images)
        attended, masks, previous = [], [], None
        for module, shared in zip(self.attention, maps, strict=True):  # finest to coarsest
            previous, mask = module(shared, previous)
            attended.append(previous)
            masks.append(mask)
        # all tasks' maps fused at once (one upsampling per scale), then each task's channels gathered by one
        # split: slicing per task would make each slice's backward fill a gradient of the whole fused map
        pieces = self.backbone.fuse(attended).split(self.fused_split, dim=1)
        n = len(self.tasks)
        out = {}
        for i, (name, head) in enumerate(self.heads.items()):
            if self.task_kinds[name] == "dense":
                own = torch.cat(pieces[i::n], dim=1)  # task i's maps at every scale
                out[name] = prediction_to(head(own), images.shape[-2:])
            else:
                out[name] = head(self.split(attended[-1])[i])
        out["deep"] = []
        if return_features:
            per_task = [self.split(a) for a in attended], [self.split(m) for m in masks]
            out["features"] = {"backbone": maps,
                               "masks": {t: [m[i] for m in per_task[1]] for i, t in enumerate(self.tasks)},
                               "attended": {t: [a[i] for a in per_task[0]] for i, t in enumerate(self.tasks)}}
        return out

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """A task-major (B, T·C, H, W) map as T maps (B, C, H, W)."""
        return x.chunk(len(self.tasks), dim=1)


@register_model("mtan")
def build_mtan(tasks: dict[str, TaskSpec], backbone: nn.Module, **options) -> MTAN:
    return MTAN(tasks, backbone, **options)
