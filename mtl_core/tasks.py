"""One small spec per task (LibMTL-style): output channels, masked loss, metrics, direction, markers.

Models, the trainer and the metrics are generic over these specs. Every loss takes the raw model
output for the task (any spatial resolution: dense predictions are upsampled to the label's size,
which is how MTI-Net supervises its 1/4 ... 1/32 initial predictions) and the batch dict, and
masks missing annotations. A batch where a task's annotations are all missing gives a loss of
exactly 0 with zero gradient, never NaN.

Two loss conventions, chosen by the task set (`loss_convention`):
- "mtinet" (every dense study): MTI-Net's losses and task weights, from its official code;
- "rock" (a task set with detection: primary MTL as in ROCK, models ssd / flat_mtl / rock): the losses
  and weights of ROCK's reference implementation (github vita-epfl/rock-pytorch) for scene, depth and
  normals, and its multibox loss for detection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .resize import resize_bilinear

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
    weight: float = 1.0  # default loss weight (MTI-Net's values for NYUD / PASCAL, or ROCK's)
    classes: tuple[str, ...] = ()


def _resize_like(pred: Tensor, target: Tensor) -> Tensor:
    # bilinear as F.interpolate, with a faster backward (mtl_core/resize.py); its result is contiguous
    # (NCHW), the layout in which F.cross_entropy's log-softmax over classes needs no copy
    return resize_bilinear(pred, target.shape[-2:])


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` over `mask`; exactly 0 (and zero gradient) when the mask is empty."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def _masked_cross_entropy(pred: Tensor, target: Tensor) -> Tensor:
    logits = _resize_like(pred, target).float()
    # ignored pixels get a dummy class 0 and are masked out; any other out-of-range label raises
    losses = F.cross_entropy(logits, torch.where(target == 255, 0, target), reduction="none")
    return _masked_mean(losses, target != 255)


# The dense losses below reproduce MTI-Net's, defined in the official Multi-Task-Learning-PyTorch code
# (losses/loss_functions.py, instantiated per task by get_loss in utils/common_config.py), so that its
# task weights (NYUD: semseg 1, depth 1, normals 10, edge 50; PASCAL: semseg 1, human parts 2,
# saliency 5, edge 50, normals 10) keep their meaning. Where every label of a task is missing the
# official NLL / L1 means would be NaN (a mean over nothing); here they are exactly 0. How ignored
# edge / saliency pixels enter the balanced BCE is explained at `balanced_bce`.


def semseg_loss(pred: Tensor, batch: dict) -> Tensor:
    """Official SoftMaxwithLoss: log-softmax + NLL, averaged over the pixels whose label is not 255."""
    return _masked_cross_entropy(pred, batch["semseg"])


def human_parts_loss(pred: Tensor, batch: dict) -> Tensor:
    """Official SoftMaxwithLoss, as for semseg. The official pipeline turns the all-background label map
    of an image without a person into all 255 (AddIgnoreRegions in data/custom_transforms.py); the
    loaders here already deliver such images as all 255, so they contribute nothing."""
    return _masked_cross_entropy(pred, batch["human_parts"])


def depth_loss(pred: Tensor, batch: dict) -> Tensor:
    """Official DepthLoss('l1'): mean |pred - gt| over the valid pixels. The official code first turns
    depth 0 into 255 and masks 255; here depth 0 itself marks a missing value."""
    target = batch["depth"]
    return _masked_mean((_resize_like(pred, target).float() - target).abs(), target > 0)


def normals_loss(pred: Tensor, batch: dict) -> Tensor:
    """Official NormalsLoss(normalize=True, norm=1): the prediction divided by (its L2 norm + 1e-12),
    then L1 to the label summed over the valid elements and divided by their number. A valid pixel
    has 3 valid elements, so this is the mean absolute error per component (not per pixel).

    A zero-norm label vector is missing (the official AddIgnoreRegions sets all 3 of its components
    to the ignore value 255)."""
    target = batch["normals"]
    pred = _resize_like(pred, target).float()
    unit = pred / (pred.norm(p=2, dim=1, keepdim=True) + 1e-12)
    valid = (target.abs().sum(dim=1, keepdim=True) > 0).expand_as(target)
    return _masked_mean((unit - target).abs(), valid)


def balanced_bce(pred: Tensor, target: Tensor, pos_weight: float | None) -> Tensor:
    """Official BalancedCrossEntropyLoss(size_average=True): with l the per-pixel binary cross-entropy
    of the logits and positives = labels >= 0.5,

        loss = (w * sum_pos l + (1 - w) * sum_neg l) / numel,

    where w = `pos_weight`, or, when it is None, the fraction of negatives among the batch's pixels
    (HED-style balancing, computed over the whole batch, not per image).

    Pixels labelled 255 are ignored: they enter neither sum, nor the count of negatives and pixels
    behind w, nor numel; numel is the number of non-ignored pixels. The official training data has
    no ignored edge or saliency pixels, so there numel is every pixel of the batch and the two
    definitions agree. Counting only annotated pixels is the masked generalisation that makes a
    missing annotation behave as if the pixel (or image) were absent from the batch, as in the other
    losses. (The official class also takes an optional void map that none of its training code
    passes; that branch would still divide by every pixel, void ones included.)

    With w from the batch, a batch with a single class among its annotated pixels has w = 0 or 1
    and so a loss of exactly 0, as in the official code.
    """
    logits = _resize_like(pred, target).float()
    valid = target != 255
    positive = (target >= 0.5) & valid
    negative = (target < 0.5) & valid
    losses = F.binary_cross_entropy_with_logits(logits, positive.to(logits.dtype), reduction="none")
    numel = valid.sum().clamp_min(1).to(logits.dtype)
    if pos_weight is None:
        w = negative.sum().to(logits.dtype) / numel
    else:
        w = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    # torch.where, not multiplication by the masks, so that no NaN / inf at an ignored pixel can leak in
    loss_pos = torch.where(positive, losses, 0.0).sum()
    loss_neg = torch.where(negative, losses, 0.0).sum()
    return (w * loss_pos + (1 - w) * loss_neg) / numel


def edge_loss(pred: Tensor, batch: dict) -> Tensor:
    """Official edge loss: BalancedCrossEntropyLoss with pos_weight = edge_w = 0.95 (MTI-Net's NYUD and
    PASCAL configs), i.e. the few edge pixels weighted 0.95 and the rest 0.05."""
    return balanced_bce(pred, batch["edge"], pos_weight=0.95)


def sal_loss(pred: Tensor, batch: dict) -> Tensor:
    """Official saliency loss: BalancedCrossEntropyLoss without pos_weight, i.e. positives weighted by
    the fraction of negatives in the batch and negatives by the fraction of positives."""
    return balanced_bce(pred, batch["sal"], pos_weight=None)


# rock-pytorch: rock/model/losses.py, scene_cross_entropy_loss (NLLLoss on the LogSoftmax that
# rock/model/auxiliary.py, Scene.forward applies to the pooled scene maps): the same cross-entropy.
def scene_loss(pred: Tensor, batch: dict) -> Tensor:
    """Cross-entropy of the (B, classes) logits, averaged over the images whose scene label is not -1.
    Both conventions use it (ROCK's reference weights it 3)."""
    target = batch["scene"]
    losses = F.cross_entropy(pred.float(), target.clamp_min(0), reduction="none")
    return _masked_mean(losses, target >= 0)


def detection_loss(pred, batch: dict) -> Tensor:
    """ROCK's reference multibox loss (see `models.detection.multibox_loss`)."""
    from .models.detection import multibox_loss  # the SSD loss lives with the detector

    return multibox_loss(pred, batch)


# The auxiliary losses of ROCK's reference implementation (rock-pytorch, rock/model/losses.py), used
# with its weights: scene 3, depth 3, normals 30 (MultiTaskLoss.__init__). Its NYUv2 data annotates every
# image; only normals come with a validity mask, and its depth loss averages over every pixel. Here, as
# for every task, a missing annotation is masked per image and per pixel. The reference computes the
# losses at the feature map's resolution, with the labels resized to it (nearest); here, as for every
# dense loss, the prediction is upsampled to the label: a nearest-resized label would drop most of its
# pixels on the detectors' base maps (32x32 for 04's 128x128 images, 2x2 at 1/32 of a 64x64 one).

ROCK_MIN_DEPTH, ROCK_MAX_DEPTH = 1e-3, 10.0  # metres; the reference clamps the label to this range


# rock-pytorch: rock/model/losses.py, huber_loss. ROCK's paper uses the reverse Huber (berHu) loss of
# Laina et al. (2016) for depth; the reference's README ("Changes from paper") replaced it by this Huber
# loss, because berHu's threshold, set by the largest error of the batch, left single pixels very wrong.
# (Its reverse_huber_loss, with a fixed threshold 0.5, is defined but unused.)
def log_depth_huber_loss(pred: Tensor, batch: dict) -> Tensor:
    """Smooth L1 (threshold 1) between log(pred) and log(label clamped to [1e-3, 10] m), averaged over
    the valid pixels (depth > 0). The prediction is depth in metres: the ROCK models regress its log
    and return its exponential, so log(pred) is the reference's raw prediction. The log prediction is
    upsampled to the label's size (interpolated in log space, where the loss is)."""
    target = batch["depth"]
    log_pred = _resize_like(pred.float().clamp_min(torch.finfo(torch.float32).tiny).log(), target)
    log_target = target.float().clamp(ROCK_MIN_DEPTH, ROCK_MAX_DEPTH).log()
    return _masked_mean(F.smooth_l1_loss(log_pred, log_target, reduction="none"), target > 0)


# rock-pytorch: rock/model/losses.py, surface_normals_loss (with normalize in the same file).
def normals_cosine_l2_loss(pred: Tensor, batch: dict) -> Tensor:
    """Per valid pixel, with p the prediction divided by max(|pred|, 1e-5) and n the (unit) label:
    (1 - p.n) + |p - n|^2, averaged over the valid pixels (label not all zero). For a nonzero
    prediction this is 3 (1 - cos(pred, n)); a zero prediction costs 1 + |n|^2 = 2."""
    target = batch["normals"]
    pred = _resize_like(pred, target).float()
    unit = pred / pred.norm(p=2, dim=1, keepdim=True).clamp_min(1e-5)
    per_pixel = (1 - (unit * target).sum(dim=1)) + ((unit - target) ** 2).sum(dim=1)
    return _masked_mean(per_pixel, target.abs().sum(dim=1) > 0)


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

# What the "rock" convention changes in the specs above: ROCK's reference losses and weights
# (rock-pytorch: rock/model/losses.py, MultiTaskLoss; the detection loss is already its multibox loss).
_ROCK_SPECS = {
    "scene": dict(loss=scene_loss, weight=3.0),
    "depth": dict(loss=log_depth_huber_loss, weight=3.0),
    "normals": dict(loss=normals_cosine_l2_loss, weight=30.0),
}
CONVENTIONS = ("mtinet", "rock")


def loss_convention(names: Iterable[str]) -> str:
    """The loss convention of a task set: "rock" with detection (ROCK's primary MTL), else "mtinet"."""
    return "rock" if "detection" in tuple(names) else "mtinet"


def make_task(name: str, num_classes: int | None = None, classes: Iterable[str] = (),
              weight: float | None = None, convention: str = "mtinet") -> TaskSpec:
    if name not in _SPECS:
        raise ValueError(f"task={name!r}: unknown task; choose from {list(TASK_NAMES)}")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention={convention!r}: choose from {list(CONVENTIONS)}")
    spec = {**_SPECS[name], **(_ROCK_SPECS.get(name, {}) if convention == "rock" else {})}
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


def default_weights(names: Iterable[str], dataset=None) -> dict[str, float]:
    """The loss weights a task set takes when its config names none: 1 for a single task, else (MTI-Net
    convention only) `dataset`'s own `loss_weights`; the spec's for the tasks these leave out."""
    names = list(names)
    if len(names) == 1:
        # one loss has no balance to strike: a single-task network trains its loss at weight 1, as the
        # official MTI-Net code's single-task setups do (losses/loss_schemes.py, SingleTaskLoss: no weight)
        return {names[0]: 1.0}
    # a dataset's own weights were tuned for the MTI-Net losses; ROCK's losses keep ROCK's weights
    if loss_convention(names) != "mtinet":
        return {}
    return {n: float(w) for n, w in (getattr(dataset, "loss_weights", None) or {}).items() if n in names}


def make_tasks(names: Iterable[str], dataset=None,
               weights: dict[str, float] | None = None) -> dict[str, TaskSpec]:
    """Specs for `names`; class lists come from `dataset`'s classes / scene_classes / det_classes /
    part_classes attributes, when it has them. Losses follow `loss_convention(names)`. Loss weights:
    `weights`, else 1 for a single task, else (MTI-Net convention only) the dataset's own
    `loss_weights` (the synthetic benchmark's, chosen by benchmarks/task_weights.py for the MTI-Net
    losses), else the spec's (MTI-Net's official values, which the real datasets keep; ROCK's under the
    ROCK convention)."""
    if isinstance(names, str):
        names = [names]
    names = list(names)
    convention = loss_convention(names)
    weights = {**default_weights(names, dataset), **(weights or {})}
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
        specs[name] = make_task(name, classes=classes, weight=weights.get(name), convention=convention)
    return specs
