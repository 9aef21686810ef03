"""ROCK (Mordan et al., NeurIPS 2018): a residual auxiliary block for detection, and its baselines.

One implementation, three registered names:
- "ssd": a plain SSD on the backbone's last map -- the single-task baseline (tasks: detection only);
- "rock": the ROCK block on that base map, then the SSD head on the refined map;
- "flat_mtl": "rock" with fusion="none" -- the same auxiliary heads, nothing fused back (flat MTL).
Auxiliary tasks are the non-detection tasks given to `build_model` (any subset of scene, depth,
normals; "rock" with detection alone degenerates to "ssd"); any other task is a ValueError.

The ROCK block (top-level child `rock`):
    trunk      1x1 conv base -> width, BN, ReLU; 3x3 conv, BN, ReLU (shared by the auxiliary tasks)
    encoders   per auxiliary task: 1x1 conv -> width/2, BN, ReLU; 3x3 conv, BN, ReLU; 1x1 conv -> width,
               BN, ReLU; then a linear 1x1 conv to the *task features*: scene -> one map per scene class,
               depth -> `group_channels` maps, normals -> 3 groups of `group_channels` maps
    decoders   per auxiliary task: 1x1 conv from the task features back to the base width, BN, ReLU
    fusion     refined = ReLU(BN(base (+) sum_t decoded_t)), (+) = `fusion`:
               "add" (the paper's choice), "multiply" (element-wise), "concat" (concatenate base and
               the summed decoded maps, then a 1x1 conv back to the base width), "none" (no decoders,
               no fusion: the SSD head sees the base map itself).
The auxiliary predictors (top-level child `aux_heads`) read the task features. With intensive pooling
(the default, parameter-free): scene = spatial average of the per-class maps; depth = channel mean of
its group -> 1 map; normals = channel mean of each of the 3 groups -> 3 maps. With
`intensive_pooling=False`: a plain learned head -- a 1x1 conv to the task's channels (for scene, global
average pooling then a linear layer: the same linear map, pooled first).

Options: `width` of the trunk (default min(512, base channels): 512 as in the paper on ResNet-50,
256 on the small "cnn" backbone), `group_channels` (default width // 4: 128 as ROCK's public
re-implementation for width 512), and the SSD head's options (`extra_layers`, `extra_channels`,
`first_scale`, `min_scale`, `max_scale`, `aspect_ratios`, `foreground_prior`, see `detection.SSDHead`:
by default ROCK's reference head, 6 levels with its default boxes).

Outputs (models/__init__.py's contract): out["detection"] (logits, deltas, priors, image_size,
feature_sizes), out["scene"] (B, S), out["depth"] (B, 1, h, w), out["normals"] (B, 3, h, w) at the base
map's resolution (the losses upsample), out["deep"] = []. The depth predictor regresses log-depth (ROCK's
reference trains it with a Huber loss on log-depth, see tasks.log_depth_huber_loss); out["depth"] is its
exponential, in metres like every model's. `return_features=True` adds
out["features"] = {"base": base map, "refined": map fed to the SSD head, "task_features": {task: map}}.

The base map is the backbone's last map: stride 16 on a dilated ResNet (as in the paper: 30x40 on
NYUv2's 480x640 images); on the "cnn" backbone the 1/32 map unless `output_stride` keeps it finer. The
reference's default boxes need a base grid of about 1/30 of the image to fit objects of 0.1 ... 0.5 of
it: on the synthetic benchmark, 128x128 images with `output_stride=4` (32x32 -> 16x16 -> ... -> 1x1)
give 94 % of the validation objects a prior at IoU >= 0.5, 64x64 images at 1/16 only 7 %
(`detection_study.prior_coverage`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..tasks import TaskSpec
from .detection import SSDHead
from .heads import SceneHead
from .registry import check_input, register_model

AUX_TASKS = ("scene", "depth", "normals")
FUSIONS = ("add", "multiply", "concat", "none")


def conv_bn_relu(cin: int, cout: int, kernel_size: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


def feature_channels(spec: TaskSpec, group_channels: int) -> int:
    """Channels of a task's features: a map per scene class, a group per depth / normals component."""
    return spec.channels if spec.name == "scene" else spec.channels * group_channels


class IntensivePooling(nn.Module):
    """ROCK's parameter-free predictor: the mean of each of `groups` channel groups (-> `groups` maps),
    then, for image-level tasks (`spatial=True`), the spatial mean (-> (B, groups))."""

    def __init__(self, groups: int, spatial: bool = False):
        super().__init__()
        self.groups, self.spatial = groups, spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = x.reshape(b, self.groups, c // self.groups, h, w).mean(dim=2)
        return y.mean(dim=(2, 3)) if self.spatial else y

    def extra_repr(self) -> str:
        return f"groups={self.groups}, spatial={self.spatial}"


def aux_predictor(spec: TaskSpec, group_channels: int, intensive_pooling: bool) -> nn.Module:
    cin = feature_channels(spec, group_channels)
    if intensive_pooling:
        return IntensivePooling(spec.channels, spatial=spec.name == "scene")
    return SceneHead(cin, spec.channels) if spec.name == "scene" else nn.Conv2d(cin, spec.channels, 1)


class ROCKBlock(nn.Module):
    """Shared trunk -> per-task encoders (task features) -> decoders -> fusion into the base map."""

    def __init__(self, in_channels: int, aux_tasks: dict[str, TaskSpec], width: int, group_channels: int,
                 fusion: str = "add"):
        super().__init__()
        self.fusion = fusion
        self.trunk = nn.Sequential(*conv_bn_relu(in_channels, width, 1), *conv_bn_relu(width, width, 3))
        mid = max(width // 2, 1)
        bottleneck = lambda: [*conv_bn_relu(width, mid, 1), *conv_bn_relu(mid, mid, 3),  # noqa: E731
                              *conv_bn_relu(mid, width, 1)]
        self.encoders = nn.ModuleDict({  # bottleneck, then a linear 1x1 conv to the task features
            name: nn.Sequential(*bottleneck(), nn.Conv2d(width, feature_channels(spec, group_channels), 1))
            for name, spec in aux_tasks.items()})
        if fusion != "none":
            self.decoders = nn.ModuleDict({
                name: nn.Sequential(*conv_bn_relu(feature_channels(spec, group_channels), in_channels, 1))
                for name, spec in aux_tasks.items()})
            if fusion == "concat":
                self.merge = nn.Conv2d(2 * in_channels, in_channels, 1, bias=False)
            self.norm = nn.BatchNorm2d(in_channels)
            self.relu = nn.ReLU(inplace=True)

    def forward(self, base: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        shared = self.trunk(base)
        task_features = {name: encoder(shared) for name, encoder in self.encoders.items()}
        if self.fusion == "none":
            return base, task_features
        aux = sum(self.decoders[name](f) for name, f in task_features.items())
        if self.fusion == "add":
            fused = base + aux
        elif self.fusion == "multiply":
            fused = base * aux
        else:  # concat
            fused = self.merge(torch.cat([base, aux], dim=1))
        return self.relu(self.norm(fused)), task_features


class ROCKDetector(nn.Module):
    """Backbone -> (ROCK block) -> SSD head, with auxiliary predictors for the non-detection tasks."""

    def __init__(self, tasks: dict[str, TaskSpec], backbone: nn.Module, fusion: str = "add",
                 intensive_pooling: bool = True, width: int | None = None, group_channels: int | None = None,
                 **ssd_options):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion={fusion!r}: unknown fusion op; choose from {list(FUSIONS)}")
        if "detection" not in tasks:
            raise ValueError(f"tasks: {list(tasks)} has no 'detection'; ROCK's primary task is detection")
        unknown = [name for name in tasks if name != "detection" and name not in AUX_TASKS]
        if unknown:
            raise ValueError(f"tasks: {unknown} cannot be auxiliary tasks of ROCK; "
                             f"choose from {list(AUX_TASKS)}")
        aux_tasks = {name: spec for name, spec in tasks.items() if name != "detection"}
        base_channels = backbone.channels[-1]
        width = width or min(512, base_channels)
        group_channels = group_channels or max(width // 4, 1)
        self.fusion, self.intensive_pooling = fusion, intensive_pooling
        self.aux_tasks = list(aux_tasks)

        self.backbone = backbone
        # no auxiliary task: a plain SSD (the "ssd" model), no ROCK block at all
        self.rock = ROCKBlock(base_channels, aux_tasks, width, group_channels, fusion) if aux_tasks else None
        self.aux_heads = nn.ModuleDict({name: aux_predictor(spec, group_channels, intensive_pooling)
                                        for name, spec in aux_tasks.items()})
        self.ssd = SSDHead(base_channels, tasks["detection"].channels, **ssd_options)

    def forward(self, images: torch.Tensor, return_features: bool = False) -> dict:
        check_input(images)
        base = self.backbone(images)[-1]
        refined, task_features = self.rock(base) if self.rock is not None else (base, {})
        out = {"detection": self.ssd(refined, images.shape[-2:])}
        for name, features in task_features.items():
            out[name] = self.aux_heads[name](features)
        if "depth" in out:
            # the predictor regresses log-depth, as ROCK's reference (whose loss compares it with the log
            # of the label: rock-pytorch, rock/model/losses.py, huber_loss); out["depth"] is in metres
            out["depth"] = out["depth"].exp()
        out["deep"] = []
        if return_features:
            out["features"] = {"base": base, "refined": refined, "task_features": task_features}
        return out


@register_model("ssd")
def build_ssd(tasks: dict[str, TaskSpec], backbone: nn.Module, **options) -> ROCKDetector:
    """Single-task SSD on the backbone's last map (options: the SSD head's)."""
    if list(tasks) != ["detection"]:
        raise ValueError(f"tasks: 'ssd' is the single-task detector; it takes only ['detection'], "
                         f"got {list(tasks)}")
    return ROCKDetector(tasks, backbone, fusion="none", **options)


@register_model("rock")
def build_rock(tasks: dict[str, TaskSpec], backbone: nn.Module, fusion: str = "add",
               intensive_pooling: bool = True, **options) -> ROCKDetector:
    """ROCK: detection + auxiliary tasks among scene / depth / normals, fused back by `fusion`."""
    return ROCKDetector(tasks, backbone, fusion=fusion, intensive_pooling=intensive_pooling, **options)


@register_model("flat_mtl")
def build_flat_mtl(tasks: dict[str, TaskSpec], backbone: nn.Module, **options) -> ROCKDetector:
    """Flat MTL baseline: ROCK's auxiliary heads, no fusion (no decoders): detection sees the base map."""
    if "fusion" in options:
        raise ValueError(f"fusion={options['fusion']!r}: 'flat_mtl' is 'rock' with fusion='none'; use 'rock'")
    return build_rock(tasks, backbone, fusion="none", **options)
