"""One small spec per task (LibMTL-style): output channels, masked loss, metrics, direction, markers.

Models, the trainer and the metrics are generic over these specs. Every loss takes the raw model
output for the task (any spatial resolution: dense predictions are upsampled to the label's size,
which is how MTI-Net supervises its 1/4 ... 1/32 initial predictions) and the batch dict, and
masks missing annotations. A batch where a task's annotations are all missing gives a loss of
exactly 0 with zero gradient, never NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


@dataclass(frozen=True)
class TaskSpec:
    name: str
    channels: int  # prediction channels: classes for semseg / scene / detection, 1 depth, 3 normals...
    kind: str  # "dense" (a map per image), "image" (a vector per image) or "detection"
    loss: Callable[[object, dict], Tensor] = field(repr=False)
    metrics: tuple[str, ...]  # metric names reported by `mtl_core.metrics`
    higher_is_better: dict[str, bool] = field(repr=False, hash=False)
    primary: str  # the metric used when a single number per task is needed
    missing: str  # how a missing annotation is marked in the batch dict
    weight: float = 1.0  # default loss weight (MTI-Net's values for NYUD / PASCAL)
    classes: tuple[str, ...] = ()


def _resize_like(pred: Tensor, target: Tensor) -> Tensor:
    if pred.shape[-2:] != target.shape[-2:]:
        pred = F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return pred


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` over `mask`; exactly 0 (and zero gradient) when the mask is empty."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def _masked_cross_entropy(pred: Tensor, target: Tensor) -> Tensor:
    logits = _resize_like(pred, target).float()
    # ignored pixels get a dummy class 0 and are masked out; any other out-of-range label raises
    losses = F.cross_entropy(logits, torch.where(target == 255, 0, target), reduction="none")
    return _masked_mean(losses, target != 255)


def semseg_loss(pred: Tensor, batch: dict) -> Tensor:
    return _masked_cross_entropy(pred, batch["semseg"])


def human_parts_loss(pred: Tensor, batch: dict) -> Tensor:
    """Cross-entropy like semseg; images without a person are all 255 and contribute nothing."""
    return _masked_cross_entropy(pred, batch["human_parts"])


def depth_loss(pred: Tensor, batch: dict) -> Tensor:
    """L1 on valid pixels (MTI-Net's depth loss); depth 0 = missing."""
    target = batch["depth"]
    return _masked_mean((_resize_like(pred, target).float() - target).abs(), target > 0)


def normals_loss(pred: Tensor, batch: dict) -> Tensor:
    """L1 between the unit-normalised prediction and the label (MTI-Net); all-zero label = missing."""
    target = batch["normals"]
    unit = F.normalize(_resize_like(pred, target).float(), dim=1)
    valid = (target.abs().sum(dim=1, keepdim=True) > 0).expand_as(target)
    return _masked_mean((unit - target).abs(), valid) * 3  # per pixel: sum over the 3 components


def balanced_bce(pred: Tensor, target: Tensor, pos_weight: float | None) -> Tensor:
    """BCE on pixels != 255; positives weighted by `pos_weight` and negatives by 1 - pos_weight."""
    logits = _resize_like(pred, target).float()
    valid = target != 255
    y = torch.where(valid, target, torch.zeros_like(target))
    losses = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    if pos_weight is not None:
        losses = losses * torch.where(y > 0.5, 2 * pos_weight, 2 * (1 - pos_weight))
    return _masked_mean(losses, valid)


def edge_loss(pred: Tensor, batch: dict) -> Tensor:
    """Edges are ~5% of pixels: MTI-Net weights positives 0.95 and negatives 0.05."""
    return balanced_bce(pred, batch["edge"], pos_weight=0.95)


def sal_loss(pred: Tensor, batch: dict) -> Tensor:
    return balanced_bce(pred, batch["sal"], pos_weight=None)


def scene_loss(pred: Tensor, batch: dict) -> Tensor:
    target = batch["scene"]
    losses = F.cross_entropy(pred.float(), target.clamp_min(0), reduction="none")
    return _masked_mean(losses, target >= 0)


def detection_loss(pred, batch: dict) -> Tensor:
    from .models.detection import multibox_loss  # the SSD loss lives with the detector

    return multibox_loss(pred, batch)


# Default class counts: the synthetic benchmark's, and PASCAL's 6 human parts + background;
# real datasets pass their own (see make_tasks).
DEFAULT_CLASSES = {"semseg": 13, "scene": 6, "detection": 10, "human_parts": 7}

_SPECS = {
    "semseg": dict(kind="dense", loss=semseg_loss, metrics=("miou", "pixel_acc"),
                   higher_is_better={"miou": True, "pixel_acc": True}, primary="miou",
                   missing="label 255 (ignore)", weight=1.0),
    "depth": dict(channels=1, kind="dense", loss=depth_loss, metrics=("rmse", "abs_rel", "delta1"),
                  higher_is_better={"rmse": False, "abs_rel": False, "delta1": True}, primary="rmse",
                  missing="depth 0", weight=1.0),
    "normals": dict(channels=3, kind="dense", loss=normals_loss,
                    metrics=("mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30"),
                    higher_is_better={"mean_angle": False, "median_angle": False, "within_11.25": True,
                                      "within_22.5": True, "within_30": True},
                    primary="mean_angle", missing="all-zero vector", weight=10.0),
    "edge": dict(channels=1, kind="dense", loss=edge_loss, metrics=("odsF",), higher_is_better={"odsF": True},
                 primary="odsF", missing="label 255 (ignore)", weight=50.0),
    "sal": dict(channels=1, kind="dense", loss=sal_loss, metrics=("maxF", "mae"),
                higher_is_better={"maxF": True, "mae": False}, primary="maxF",
                missing="label 255 (ignore)", weight=5.0),
    "scene": dict(kind="image", loss=scene_loss, metrics=("accuracy",), higher_is_better={"accuracy": True},
                  primary="accuracy", missing="label -1", weight=1.0),
    "detection": dict(kind="detection", loss=detection_loss, metrics=("map50", "map"),
                      higher_is_better={"map50": True, "map": True}, primary="map50",
                      missing="no boxes (every image is annotated)", weight=1.0),
    "human_parts": dict(kind="dense", loss=human_parts_loss, metrics=("miou", "pixel_acc"),
                        higher_is_better={"miou": True, "pixel_acc": True}, primary="miou",
                        missing="label 255 (ignore; all 255 when an image shows no person)", weight=2.0),
}
TASK_NAMES = tuple(_SPECS)


def make_task(name: str, num_classes: int | None = None, classes: Iterable[str] = (),
              weight: float | None = None) -> TaskSpec:
    if name not in _SPECS:
        raise ValueError(f"task={name!r}: unknown task; choose from {list(TASK_NAMES)}")
    spec = dict(_SPECS[name])
    classes = tuple(classes)
    if name in DEFAULT_CLASSES:
        if num_classes is not None and classes and num_classes != len(classes):
            raise ValueError(f"num_classes={num_classes} disagrees with the {len(classes)} class names given")
        spec["channels"] = num_classes or len(classes) or DEFAULT_CLASSES[name]
    elif num_classes is not None:
        raise ValueError(f"num_classes: task {name!r} has a fixed number of output channels")
    if weight is not None:
        spec["weight"] = float(weight)
    return TaskSpec(name=name, classes=classes, **spec)


def make_tasks(names: Iterable[str], dataset=None,
               weights: dict[str, float] | None = None) -> dict[str, TaskSpec]:
    """Specs for `names`; class lists come from `dataset`'s classes / scene_classes / det_classes /
    part_classes attributes, when it has them."""
    if isinstance(names, str):
        names = [names]
    names = list(names)
    weights = weights or {}
    unknown = [n for n in names if n not in _SPECS]
    if unknown:
        raise ValueError(f"tasks: unknown task(s) {unknown}; choose from {list(TASK_NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"tasks: {names} lists a task twice")
    class_attr = {"semseg": "classes", "scene": "scene_classes", "detection": "det_classes",
                  "human_parts": "part_classes"}
    specs = {}
    for name in names:
        classes = tuple(getattr(dataset, class_attr.get(name, ""), ())) if dataset is not None else ()
        specs[name] = make_task(name, classes=classes, weight=weights.get(name))
    return specs
