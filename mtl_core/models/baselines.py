"""Shared-encoder baselines: the multi-task baseline (hard parameter sharing) and single-task networks.

Both are MTI-Net's comparison points: one backbone, its fused HRNetV2 representation (all four maps
upsampled to the finest and concatenated, `Backbone.fuse`) and one small head per task. The single-task
network is the same architecture built for one task, so "multi-task vs single-task" changes nothing but
the task set.

    backbone --> 4 maps --> fuse (upsample to the finest + concat) --> per task DenseHead --> upsample
                     \\--> coarsest map --> SceneHead (image-level tasks such as `scene`)

Capacity control: `head_width` widens the dense heads' hidden layer, and `head_width_for` finds the
width that gives the baseline a target parameter count (e.g. MTI-Net's), so that "MTI-Net vs baseline"
can be told apart from "more parameters vs fewer".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from ..tasks import TaskSpec
from .heads import DenseHead, SceneHead, prediction_to
from .registry import build_model, check_input, register_model


def require_task_kinds(tasks: dict[str, TaskSpec], kinds: Sequence[str], model: str, hint: str = "") -> None:
    """Raise a ValueError naming the first task whose kind (dense, image, detection) `model` cannot do."""
    for name, spec in tasks.items():
        if spec.kind not in kinds:
            raise ValueError(f"task {name!r} is a {spec.kind} task; {model} supports {' and '.join(kinds)} "
                             f"tasks only{hint}")


class SharedEncoderMTL(nn.Module):
    """Hard parameter sharing: a shared backbone and one head per task.

    Dense tasks: DenseHead (1x1 conv -> BN -> ReLU -> 1x1 conv) on the backbone's fused map, upsampled to
    the input size. Its hidden width is `head_width`, by default the fused width, as HRNet's
    segmentation head. Image-level tasks (`scene`): SceneHead on the coarsest backbone map.

    `return_features=True` adds out["features"] = {"backbone": [4 maps], "shared": fused map}.
    """

    def __init__(self, tasks: dict[str, TaskSpec], backbone: nn.Module, head_width: int | None = None):
        super().__init__()
        require_task_kinds(tasks, ("dense", "image"), "mtl_baseline / single_task",
                           hint=" (build 'rock' or 'ssd' for detection)")
        if head_width is not None and head_width < 1:
            raise ValueError(f"head_width={head_width}: must be a positive number of channels")
        self.task_kinds = {name: spec.kind for name, spec in tasks.items()}
        self.backbone = backbone
        width = backbone.fused_channels
        self.heads = nn.ModuleDict({
            name: DenseHead(width, spec.channels, hidden=head_width) if spec.kind == "dense"
            else SceneHead(backbone.channels[-1], spec.channels)
            for name, spec in tasks.items()})

    def forward(self, images: torch.Tensor, return_features: bool = False) -> dict:
        check_input(images)
        maps = self.backbone(images)
        shared = self.backbone.fuse(maps)
        out = {}
        for name, head in self.heads.items():
            if self.task_kinds[name] == "dense":
                out[name] = prediction_to(head(shared), images.shape[-2:])
            else:
                out[name] = head(maps[-1])
        out["deep"] = []
        if return_features:
            out["features"] = {"backbone": maps, "shared": shared}
        return out


@register_model("mtl_baseline")
def build_mtl_baseline(tasks: dict[str, TaskSpec], backbone: nn.Module, **options) -> SharedEncoderMTL:
    return SharedEncoderMTL(tasks, backbone, **options)


@register_model("single_task")
def build_single_task(tasks: dict[str, TaskSpec], backbone: nn.Module, **options) -> SharedEncoderMTL:
    """The baseline architecture for exactly one task (the reference B_t of the Δm metric)."""
    if len(tasks) != 1:
        raise ValueError(f"tasks: single_task takes exactly one task, got {list(tasks)}; "
                         "build one model per task (or use 'mtl_baseline')")
    return SharedEncoderMTL(tasks, backbone, **options)


def head_width_for(target_params: float, tasks: Iterable[str] | dict[str, TaskSpec], backbone: str = "cnn",
                   backbone_options: dict | None = None) -> int:
    """The `head_width` whose mtl_baseline has the parameter count closest to `target_params`.

    The count is affine in the width (each dense head has cin·h + 2h + h·out + out weights), so two
    builds give the slope and the intercept."""
    def count(width: int) -> int:
        model = build_model("mtl_baseline", tasks, backbone=backbone, backbone_options=backbone_options,
                            head_width=width)
        return sum(p.numel() for p in model.parameters())

    one, slope = count(1), count(2) - count(1)
    if slope == 0:
        raise ValueError(f"tasks: {list(tasks)} has no dense task: head_width changes nothing")
    return max(1, round(1 + (target_params - one) / slope))
