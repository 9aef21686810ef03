"""PAD-Net (Xu et al., CVPR 2018) as MTI-Net compares against it: multi-modal distillation once, at 1/4.

    backbone --> 4 maps --> upsample to 1/4 + concat (as the baseline)
             --> InitialTaskPrediction: per task 2 BasicBlocks to `width` + 1x1 conv  (deep supervision)
             --> MultiModalDistillation: every task receives gated messages from the others
             --> per task DenseHead --> upsample to input

The two building blocks defined here are reused by MTI-Net (mtinet.py) at every scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..tasks import TaskSpec
from .baselines import concat_scales, require_task_kinds
from .heads import BasicBlock, DenseHead, upsample_to
from .registry import check_input, register_model


def projecting_block(cin: int, cout: int) -> BasicBlock:
    """A BasicBlock whose shortcut is always a 1x1 conv + BN (MTI-Net: the first block of a task branch).

    heads.BasicBlock projects only when the width changes; always projecting keeps the parameter
    names of a branch independent of its input width (e.g. with or without the FPM input)."""
    block = BasicBlock(cin, cout)
    block.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
    return block


class InitialTaskPrediction(nn.Module):
    """Per task: two BasicBlocks to `width` (task features) + a 1x1 conv with bias (initial prediction).

    `forward(x)` takes one shared map or a {task: map} dict (MTI-Net feeds each task its own input) and
    returns ({task: features}, {task: prediction}); the predictions get deep supervision. With
    `predict=False` no prediction convs are built and the prediction dict is empty.
    """

    def __init__(self, tasks: dict[str, TaskSpec], cin: int, width: int, predict: bool = True):
        super().__init__()
        self.features = nn.ModuleDict({
            name: nn.Sequential(projecting_block(cin, width), BasicBlock(width, width)) for name in tasks})
        self.predictions = nn.ModuleDict({name: nn.Conv2d(width, spec.channels, 1)
                                          for name, spec in tasks.items()} if predict else {})

    def forward(self, x: torch.Tensor | dict[str, torch.Tensor]) -> tuple[dict, dict]:
        features = {name: branch(x[name] if isinstance(x, dict) else x)
                    for name, branch in self.features.items()}
        predictions = {name: conv(features[name]) for name, conv in self.predictions.items()}
        return features, predictions


class MultiModalDistillation(nn.Module):
    """PAD-Net's attention-guided message passing (MTI-Net, "multi-modal distillation"):

        F_t^out = F_t + sum_{a != t} sigmoid(W^gate_{t,a} * F_a) ⊙ (W^msg_{t,a} * F_a)

    with separate 3x3 convolutions (no BN, no bias) for every (target t, source a) pair. As in MTI-Net's
    code the gate is computed from the source features F_a (the PAD-Net paper computes it from F_t).
    `targets` (default: all tasks) are the tasks that receive messages; every task in `tasks` sends.

    `forward({task: F})` returns ({target: F_out}, {target: {source: gate map in [0, 1]}}).
    """

    def __init__(self, tasks: Sequence[str], channels: int, targets: Sequence[str] | None = None):
        super().__init__()
        self.tasks = list(tasks)
        self.targets = list(self.tasks if targets is None else targets)

        def conv_per_pair():
            return nn.ModuleDict({t: nn.ModuleDict({a: nn.Conv2d(channels, channels, 3, padding=1, bias=False)
                                                    for a in self.tasks if a != t}) for t in self.targets})

        self.gate = conv_per_pair()
        self.message = conv_per_pair()

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[dict, dict]:
        out, attention = {}, {}
        for t in self.targets:
            attention[t] = {a: torch.sigmoid(self.gate[t][a](features[a])) for a in self.gate[t]}
            messages = [attention[t][a] * self.message[t][a](features[a]) for a in self.gate[t]]
            out[t] = features[t] + sum(messages) if messages else features[t]
        return out, attention


class PADNet(nn.Module):
    """PAD-Net: initial task predictions, one multi-modal distillation at 1/4, per-task heads.

    `width` (default 160) is the task-feature width at 1/4. The official code builds its initial and final
    heads from 256-wide bottleneck blocks (64-wide 3x3 convolutions); here the task branches are
    MTI-Net's 3x3 BasicBlocks, and width 160 makes parameters and MACs close to the official PAD-Net's
    on NYUD with HRNet-18 (ours 7.10M / 71.8 GMACs, official 7.02M / 70.3 at 480x640). Everything
    after the backbone runs at 1/4 resolution, hence the cost: the distillation alone has T(T-1) pairs
    of 3x3 convolutions at that width.

    `return_features=True` adds out["features"] = {"shared": concatenated 1/4 map,
    "initial": {task: features}, "distilled": {task: features}, "attention": {target: {source: map}}}.
    """

    def __init__(self, tasks: dict[str, TaskSpec], backbone: nn.Module, width: int = 160):
        super().__init__()
        require_task_kinds(tasks, ("dense",), "padnet")
        self.backbone = backbone
        self.initial = InitialTaskPrediction(tasks, sum(backbone.channels), width)
        self.distillation = MultiModalDistillation(list(tasks), width)
        self.heads = nn.ModuleDict({name: DenseHead(width, spec.channels) for name, spec in tasks.items()})

    def forward(self, images: torch.Tensor, return_features: bool = False) -> dict:
        check_input(images)
        shared = concat_scales(self.backbone(images))
        initial, predictions = self.initial(shared)
        distilled, attention = self.distillation(initial)
        out = {name: upsample_to(head(distilled[name]), images.shape[-2:])
               for name, head in self.heads.items()}
        out["deep"] = [predictions]
        if return_features:
            out["features"] = {"shared": shared, "initial": initial, "distilled": distilled,
                               "attention": attention}
        return out


@register_model("padnet")
def build_padnet(tasks: dict[str, TaskSpec], backbone: nn.Module, **options) -> PADNet:
    return PADNet(tasks, backbone, **options)
