"""Shared-encoder baselines: the multi-task baseline (hard parameter sharing) and single-task networks.

Both are MTI-Net's comparison points: one backbone, the HRNetV2 representation (all four maps
upsampled to 1/4 and concatenated) and one small head per task. The single-task network is the same
architecture built for one task, so "multi-task vs single-task" changes nothing but the task set.

    backbone --> 4 maps --> upsample to 1/4 + concat --> per task DenseHead --> upsample to input
                     \\--> coarsest map --> SceneHead (image-level tasks such as `scene`)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..tasks import TaskSpec
from .heads import DenseHead, SceneHead, upsample_to
from .registry import check_input, register_model


def concat_scales(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """HRNetV2 representation: upsample every map to the first (finest) one's size and concatenate."""
    size = maps[0].shape[-2:]
    return torch.cat([maps[0]] + [upsample_to(m, size) for m in maps[1:]], dim=1)


def require_task_kinds(tasks: dict[str, TaskSpec], kinds: Sequence[str], model: str, hint: str = "") -> None:
    """Raise a ValueError naming the first task whose kind (dense, image, detection) `model` cannot do."""
    for name, spec in tasks.items():
        if spec.kind not in kinds:
            raise ValueError(f"task {name!r} is a {spec.kind} task; {model} supports {' and '.join(kinds)} "
                             f"tasks only{hint}")


class SharedEncoderMTL(nn.Module):
    """Hard parameter sharing: a shared backbone and one head per task.

    Dense tasks: DenseHead (1x1 conv -> BN -> ReLU -> 1x1 conv, hidden width = the concatenated width,
    as HRNet's segmentation head) on the concatenated 1/4 representation, upsampled to the input size.
    Image-level tasks (`scene`): SceneHead on the coarsest backbone map.

    `return_features=True` adds out["features"] = {"backbone": [4 maps], "shared": concatenated map}.
    """

    def __init__(self, tasks: dict[str, TaskSpec], backbone: nn.Module):
        super().__init__()
        require_task_kinds(tasks, ("dense", "image"), "mtl_baseline / single_task",
                           hint=" (build 'rock' or 'ssd' for detection)")
        self.task_kinds = {name: spec.kind for name, spec in tasks.items()}
        self.backbone = backbone
        width = sum(backbone.channels)
        self.heads = nn.ModuleDict({
            name: DenseHead(width, spec.channels) if spec.kind == "dense"
            else SceneHead(backbone.channels[-1], spec.channels)
            for name, spec in tasks.items()})

    def forward(self, images: torch.Tensor, return_features: bool = False) -> dict:
        check_input(images)
        maps = self.backbone(images)
        shared = concat_scales(maps)
        out = {}
        for name, head in self.heads.items():
            if self.task_kinds[name] == "dense":
                out[name] = upsample_to(head(shared), images.shape[-2:])
            else:
                out[name] = head(maps[-1])
        out["deep"] = []
        if return_features:
            out["features"] = {"backbone": maps, "shared": shared}
        return out


@register_model("mtl_baseline")
def build_mtl_baseline(tasks: dict[str, TaskSpec], backbone: nn.Module) -> SharedEncoderMTL:
    return SharedEncoderMTL(tasks, backbone)


@register_model("single_task")
def build_single_task(tasks: dict[str, TaskSpec], backbone: nn.Module) -> SharedEncoderMTL:
    """The baseline architecture for exactly one task (the reference B_t of the Δm metric)."""
    if len(tasks) != 1:
        raise ValueError(f"tasks: single_task takes exactly one task, got {list(tasks)}; "
                         "build one model per task (or use 'mtl_baseline')")
    return SharedEncoderMTL(tasks, backbone)
