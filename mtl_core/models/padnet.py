"""PAD-Net (Xu et al., CVPR 2018) as MTI-Net compares against it: multi-modal distillation once, at the
finest scale (1/4 on HRNet-W18).

    backbone --> fused map (Backbone.fuse: all maps upsampled to the finest + concat, as the baseline)
             --> 1x1 conv + BN + ReLU at the fused width (with the concat, the official code's
                 HighResolutionFuse in `models/seg_hrnet.py`: what its PAD-Net on HRNet reads)
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
from .baselines import require_task_kinds
from .heads import BasicBlock, DenseHead, prediction_to
from .registry import check_input, register_model


class InitialTaskPrediction(nn.Module):
    """Per task: two BasicBlocks to `width` (task features) + a 1x1 conv with bias (initial prediction).

    The first block of every branch projects its shortcut (1x1 conv + BN), as in MTI-Net's code. All
    task branches run as one grouped BasicBlock stack (heads.BasicBlock, one group per task: the same
    layers and parameters as separate branches, fewer operator calls).

    `forward(x)` takes one shared map or a {task: map} dict (MTI-Net feeds each task its own input) and
    returns ({task: features}, {task: prediction}); the predictions get deep supervision. With
    `predict=False` no prediction convs are built and the prediction dict is empty.
    """

    def __init__(self, tasks: dict[str, TaskSpec], cin: int, width: int, predict: bool = True):
        super().__init__()
        self.tasks, self.in_channels = list(tasks), cin
        n = len(self.tasks)
        self.features = nn.Sequential(BasicBlock(n * cin, n * width, groups=n, project=True),
                                      BasicBlock(n * width, n * width, groups=n))
        self.predictions = nn.ModuleDict({name: nn.Conv2d(width, spec.channels, 1)
                                          for name, spec in tasks.items()} if predict else {})

    def forward(self, x: torch.Tensor | dict[str, torch.Tensor]) -> tuple[dict, dict]:
        # task-major channel groups: group i is task i's input (a shared map is repeated per task)
        stacked = (torch.cat([x[t] for t in self.tasks], dim=1) if isinstance(x, dict)
                   else x.repeat(1, len(self.tasks), 1, 1))
        features = dict(zip(self.tasks, self.features(stacked).chunk(len(self.tasks), dim=1), strict=True))
        predictions = {name: conv(features[name]) for name, conv in self.predictions.items()}
        return features, predictions


class MultiModalDistillation(nn.Module):
    """PAD-Net's attention-guided message passing (MTI-Net, "multi-modal distillation"):

        F_t^out = F_t + sum_{a != t} sigmoid(W^gate_{t,a} * F_a) ⊙ (W^msg_{t,a} * F_a)

    with separate 3x3 convolutions (no BN, no bias) for every (target t, source a) pair. As in MTI-Net's
    code the gate is computed from the source features F_a (the PAD-Net paper computes it from F_t).
    `targets` (default: all tasks) are the tasks that receive messages; every task in `tasks` sends.

    All the convolutions that read one source are stacked into one convolution with 2·K·C outputs (K =
    the source's receivers): the same weights as K gate and K message convolutions, one operator call.
    `receivers[a]` lists source a's targets in the order of its output blocks [gates..., messages...].

    `forward({task: F})` returns ({target: F_out}, {target: {source: gate map in [0, 1]}}).
    """

    def __init__(self, tasks: Sequence[str], channels: int, targets: Sequence[str] | None = None):
        super().__init__()
        self.tasks = list(tasks)
        self.targets = list(self.tasks if targets is None else targets)
        self.receivers = {a: [t for t in self.targets if t != a] for a in self.tasks}
        self.source = nn.ModuleDict({a: nn.Conv2d(channels, 2 * len(receivers) * channels, 3, padding=1,
                                                  bias=False)
                                     for a, receivers in self.receivers.items() if receivers})

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[dict, dict]:
        attention = {t: {} for t in self.targets}
        messages = {t: [] for t in self.targets}
        for a, conv in self.source.items():
            blocks = conv(features[a]).chunk(2 * len(self.receivers[a]), dim=1)
            for k, t in enumerate(self.receivers[a]):
                attention[t][a] = torch.sigmoid(blocks[k])
                messages[t].append(attention[t][a] * blocks[len(self.receivers[a]) + k])
        out = {t: features[t] + sum(messages[t]) if messages[t] else features[t] for t in self.targets}
        return out, attention


class PADNet(nn.Module):
    """PAD-Net: initial task predictions, one multi-modal distillation at the finest scale, per-task heads.

    `width` (default 156) is the task-feature width at that scale. The official code builds its initial
    and final heads from 256-wide bottleneck blocks (64-wide 3x3 convolutions); here the task branches are
    MTI-Net's 3x3 BasicBlocks, and width 156 makes parameters and MACs close to the official PAD-Net's
    on NYUD with HRNet-18 (ours 7.03M / 70.6 GMACs, official 7.02M / 70.3 at 480x640). Everything
    after the backbone runs at the finest scale, hence the cost: the distillation alone has T(T-1) pairs
    of 3x3 convolutions at that width.

    `return_features=True` adds out["features"] = {"shared": the fused map after the 1x1 conv,
    "initial": {task: features}, "distilled": {task: features}, "attention": {target: {source: map}}}.
    """

    def __init__(self, tasks: dict[str, TaskSpec], backbone: nn.Module, width: int = 156):
        super().__init__()
        require_task_kinds(tasks, ("dense",), "padnet")
        self.backbone = backbone
        fused = backbone.fused_channels
        self.fusion = nn.Sequential(nn.Conv2d(fused, fused, 1, bias=False), nn.BatchNorm2d(fused),
                                    nn.ReLU(inplace=True))
        self.initial = InitialTaskPrediction(tasks, fused, width)
        self.distillation = MultiModalDistillation(list(tasks), width)
        self.heads = nn.ModuleDict({name: DenseHead(width, spec.channels) for name, spec in tasks.items()})

    def forward(self, images: torch.Tensor, return_features: bool = False) -> dict:
        check_input(images)
        shared = self.fusion(self.backbone.fuse(self.backbone(images)))
        initial, predictions = self.initial(shared)
        distilled, attention = self.distillation(initial)
        out = {name: prediction_to(head(distilled[name]), images.shape[-2:])
               for name, head in self.heads.items()}
        out["deep"] = [predictions]
        if return_features:
            out["features"] = {"shared": shared, "initial": initial, "distilled": distilled,
                               "attention": attention}
        return out


@register_model("padnet")
def build_padnet(tasks: dict[str, TaskSpec], backbone: nn.Module, **options) -> PADNet:
    return PADNet(tasks, backbone, **options)
