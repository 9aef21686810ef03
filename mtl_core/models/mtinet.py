"""MTI-Net (Vandenhende et al., ECCV 2020): multi-scale task interaction networks.

Scale s = 0 (the backbone's finest map: 1/4 on HRNet-W18, 1/2 on the small `hrnet` at 64x64) ...
num_scales - 1 (the coarsest), computed from the coarsest to the finest:

    backbone map s (+ FPM output of scale s+1, per task) --> InitialTaskPrediction  (deep supervision)
        task features --> MultiModalDistillation at scale s --> distilled features of scale s
        task features --> FeaturePropagation (s > 0)         --> input of scale s-1
    FeatureAggregation: distilled features of all scales --> upsample to scale 0, concat --> task head

Paper sections: "multi-scale multi-modal distillation", "feature propagation module" (FPM) and
"feature aggregation". Layer widths follow the official implementation
(github.com/SimonVandenhende/Multi-Task-Learning-PyTorch, `models/mti_net.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..tasks import TaskSpec
from .baselines import require_task_kinds
from .heads import BasicBlock, DenseHead, SqueezeExcitation, concat_scales, prediction_to, upsample_to
from .padnet import InitialTaskPrediction, MultiModalDistillation
from .registry import check_input, register_model


class FeaturePropagation(nn.Module):
    """FPM: pass the task features of a coarser scale on to the next finer scale.

    concat the N task features (task-major, N·C channels) -> two BasicBlocks to N·C/4 -> 1x1 conv to
    N·C mask logits -> softmax -> masked concatenation -> BasicBlock to C -> per task
    squeeze-and-excitation + the task's own features (residual).

    The softmax is the official code's (`models/mti_net.py`, FPM.forward): the logits are viewed as
    (B, C, N, H, W) and normalised over the axis of size N, i.e. over every group of N consecutive
    channels of the concatenation. When N divides C each group lies inside one task's channels, so the
    mask decides which of a task's channels enter the shared map, at every pixel; with the layout above
    the masks of a group sum to 1.

    `forward({task: F})` returns ({task: propagated features}, {task: mask (B, C, H, W)}): a task's mask
    is its block of channels of the mask over the concatenation.
    """

    def __init__(self, tasks: Sequence[str], channels: int):
        super().__init__()
        self.tasks = list(tasks)
        shared = len(self.tasks) * channels
        self.mask_logits = nn.Sequential(BasicBlock(shared, shared // 4),
                                         BasicBlock(shared // 4, shared // 4),
                                         nn.Conv2d(shared // 4, shared, 1))
        self.reduce = BasicBlock(shared, channels)
        self.excitation = nn.ModuleDict({t: SqueezeExcitation(channels) for t in self.tasks})

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[dict, dict]:
        concat = torch.cat([features[t] for t in self.tasks], dim=1)  # (B, N·C, H, W), task-major
        n = len(self.tasks)
        logits = self.mask_logits(concat)
        masks = logits.unflatten(1, (-1, n)).softmax(dim=2).flatten(1, 2)  # over N consecutive channels
        shared = self.reduce(masks * concat)
        out = {t: self.excitation[t](shared) + features[t] for t in self.tasks}
        return out, dict(zip(self.tasks, masks.chunk(n, dim=1), strict=True))


class FeatureAggregation(nn.Module):
    """Per task: upsample the features of all given scales to the finest, concatenate, then
    1x1 conv -> BN -> ReLU -> 1x1 conv (HRNet's head, hidden width = concatenated width)."""

    def __init__(self, tasks: dict[str, TaskSpec], scale_channels: Sequence[int]):
        super().__init__()
        self.heads = nn.ModuleDict({name: DenseHead(sum(scale_channels), spec.channels)
                                    for name, spec in tasks.items()})

    def forward(self, scales: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {name: head(concat_scales([features[name] for features in scales]))
                for name, head in self.heads.items()}


class MTINet(nn.Module):
    """MTI-Net with switches for the paper's ablations.

    Options (keyword arguments of `build_model("mtinet", ...)`):
    - `num_scales` (1-4, default 4): scales are counted from the finest: 2 = the two finest (1/4 and
      1/8 on HRNet-W18, the paper's "2 scales"), 4 = all. The coarsest scale used starts from the
      backbone map alone; the backbone's coarser maps are ignored.
    - `task_widths` (default: the backbone's channels, as the official code): the task-feature width of
      every backbone scale, finest first. The initial predictions, FPM, distillation and aggregation of
      scale s work at `task_widths[s]`; scale s reads its backbone map plus the propagated features of
      scale s + 1. On a small backbone narrower coarse scales keep MTI-Net's size relative to the
      baseline close to the paper's (experiments.STUDY).
    - `deep_supervision` (default True): initial predictions at every scale, returned in out["deep"].
      False builds no prediction convs and leaves out["deep"] empty.
    - `distillation` (default True): False passes the task features on undistilled (no distillation layers).
    - `fpm` (default True): False removes the FPMs; every scale starts from its backbone map alone.
    - `aggregation` (default True): False predicts from the finest scale's distilled features only, with the
      same head type. The coarser scales then have no distillation (their distilled features would be
      unused: the FPMs propagate the features before distillation) and "scales"/"attention" below
      have one entry.
    - `auxiliary_tasks` (default none): names among `tasks` that are predicted only at the intermediate
      scales (deep supervision) to help the others: they take part in the FPMs and send distillation
      messages, but get no final output, e.g. `build_model("mtinet", ["semseg", "depth", "edge",
      "normals"], auxiliary_tasks=("edge", "normals"))`. They need deep supervision.

    Output: out[task] for the main tasks; out["deep"] = [{task: prediction} per scale, finest first]
    (all tasks, at the scale's resolution). `return_features=True` adds out["features"]:
    - "strides": the backbone stride of each scale, finest first, e.g. [4, 8, 16, 32] (HRNet-W18)
    - "initial": [{task: initial task features (B, C_s, H_s, W_s)} per scale], all tasks
    - "scales": [{main task: distilled features (B, C_s, H_s, W_s)} per scale]
    - "attention": [{target: {source: gate (B, C_s, H_s, W_s) in [0, 1]}} per scale] ({} without distillation)
    - "fpm_masks": [{task: mask (B, C_s, H_s, W_s)} per FPM]; entry j is the FPM at scale j+1, which
      feeds scale j; the mask over the concatenation sums to 1 in every group of N consecutive
      channels (see FeaturePropagation). Empty without FPM.

    Differences from the official code (HRNet-18, NYUD: 8.62M params / 17.2 GMACs here, 8.58M / 17.1
    there): the first block of every task branch projects its shortcut, also at the coarsest scale where
    the official code uses an identity (+42K parameters; keeps the parameter names independent of the
    `fpm` switch); the heads' first 1x1 conv has no bias (a BN follows it).
    """

    def __init__(self, tasks: dict[str, TaskSpec], backbone: nn.Module, num_scales: int = 4,
                 deep_supervision: bool = True, distillation: bool = True, fpm: bool = True,
                 aggregation: bool = True, auxiliary_tasks: Sequence[str] = (),
                 task_widths: Sequence[int] | None = None):
        super().__init__()
        require_task_kinds(tasks, ("dense",), "mtinet")
        if not 1 <= num_scales <= len(backbone.channels):
            raise ValueError(f"num_scales={num_scales}: choose 1 to {len(backbone.channels)} "
                             "(counted from the finest scale)")
        auxiliary_tasks = [auxiliary_tasks] if isinstance(auxiliary_tasks, str) else list(auxiliary_tasks)
        unknown = [t for t in auxiliary_tasks if t not in tasks]
        if unknown:
            raise ValueError(f"auxiliary_tasks: {unknown} are not among the tasks {list(tasks)}")
        self.main_tasks = [t for t in tasks if t not in auxiliary_tasks]
        if not self.main_tasks:
            raise ValueError("auxiliary_tasks: at least one task must be a main (non-auxiliary) task")
        if auxiliary_tasks and not deep_supervision:
            raise ValueError(f"auxiliary_tasks={auxiliary_tasks} are only predicted at the intermediate "
                             "scales: they need deep_supervision=True")
        self.tasks, self.num_scales = list(tasks), num_scales
        self.deep_supervision, self.use_distillation, self.use_fpm = deep_supervision, distillation, fpm
        task_widths = list(backbone.channels if task_widths is None else task_widths)
        if len(task_widths) != len(backbone.channels) or min(task_widths) < 1:
            raise ValueError(f"task_widths={task_widths}: give one positive width per backbone scale "
                             f"({len(backbone.channels)}), finest first")
        channels = task_widths[:num_scales]  # task-feature width of every scale used
        coarsest = num_scales - 1

        self.backbone = backbone
        # scale s reads its backbone map and, with the FPM, the task features of scale s + 1
        inputs = [c + (channels[s + 1] if fpm and s < coarsest else 0)
                  for s, c in enumerate(backbone.channels[:num_scales])]
        self.initial = nn.ModuleList([InitialTaskPrediction(tasks, cin, c, predict=deep_supervision)
                                      for cin, c in zip(inputs, channels, strict=True)])
        self.fpm = nn.ModuleList([FeaturePropagation(self.tasks, c) for c in channels[1:]] if fpm else [])
        aggregated = channels if aggregation else channels[:1]  # distilled features are used only here
        self.distillation = nn.ModuleList([MultiModalDistillation(self.tasks, c, targets=self.main_tasks)
                                           for c in aggregated] if distillation else [])
        self.aggregation = FeatureAggregation({t: tasks[t] for t in self.main_tasks}, aggregated)
        self.aggregated_scales = len(aggregated)
        self.strides = list(backbone.strides[:num_scales])

    def forward(self, images: torch.Tensor, return_features: bool = False) -> dict:
        check_input(images)
        maps = self.backbone(images)[:self.num_scales]
        initial, predictions, fpm_masks = [None] * self.num_scales, [None] * self.num_scales, []
        propagated = None
        for s in reversed(range(self.num_scales)):  # coarse to fine: the FPM feeds the next finer scale
            size = maps[s].shape[-2:]
            x = maps[s] if propagated is None else {
                t: torch.cat([maps[s], upsample_to(propagated[t], size)], dim=1) for t in self.tasks}
            initial[s], predictions[s] = self.initial[s](x)
            if self.use_fpm and s > 0:
                propagated, masks = self.fpm[s - 1](initial[s])
                fpm_masks.insert(0, masks)

        scales, attention = [], []
        for s in range(self.aggregated_scales):  # multi-modal distillation at every (aggregated) scale
            if self.use_distillation:
                distilled, gates = self.distillation[s](initial[s])
            else:
                distilled, gates = {t: initial[s][t] for t in self.main_tasks}, {}
            scales.append(distilled)
            attention.append(gates)

        final = self.aggregation(scales)
        out = {t: prediction_to(final[t], images.shape[-2:]) for t in self.main_tasks}
        out["deep"] = predictions if self.deep_supervision else []
        if return_features:
            out["features"] = {"strides": self.strides, "initial": initial, "scales": scales,
                               "attention": attention, "fpm_masks": fpm_masks}
        return out


@register_model("mtinet")
def build_mtinet(tasks: dict[str, TaskSpec], backbone: nn.Module, **options) -> MTINet:
    return MTINet(tasks, backbone, **options)
