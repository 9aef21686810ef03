"""Evaluation metrics for every task, accumulated over a whole split, and the multi-task Δm.

Each meter has `update(pred, batch)` (called once per batch, under `torch.no_grad`, with the raw
model output for its task and the batch dict) and `compute() -> {metric: float}`; the metric
names are those listed in the task's `TaskSpec.metrics`. `MetricSuite` runs one meter per task.

Conventions shared by all meters:
- **Pooled over the split.** Every metric is computed from counts and sums accumulated over all
  valid pixels (or samples) of the split, never as the mean of per-image values: images with
  more annotated pixels weigh more, as in the MTI-Net / ASTMT evaluation of mIoU and RMSE.
- **Units.** Ratios that read as "how much is right" — IoU, accuracies, F-measures, AP, the depth
  δ<1.25 and the normals "within x°" fractions — are in percent (0-100). Errors stay in their
  natural units: depth RMSE in metres, abs-rel as a fraction, angles in degrees, saliency MAE
  on the [0, 1] probability scale.
- **Inputs.** Predictions are cast to float32 first (models may run in bf16) and, when coarser
  than the labels, bilinearly upsampled to the label size. Missing annotations use the batch-dict
  markers (255 ignore, depth 0, all-zero normals, scene -1) and are excluded from every count.
- **Nothing to evaluate** (no valid pixel / sample yet) gives NaN rather than a made-up number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .tasks import TaskSpec

Tensor = torch.Tensor
NAN = float("nan")

__all__ = ["DepthMeter", "DetectionMeter", "EdgeMeter", "Meter", "MetricSuite", "NormalsMeter",
           "SaliencyMeter", "SceneMeter", "SemsegMeter", "default_thresholds", "delta_m", "make_meter"]


# ----------------------------------------------------------------------------------------------
# shared helpers


def default_thresholds(n: int = 99) -> Tensor:
    """`n` evenly spaced thresholds strictly inside (0, 1): 0.01 ... 0.99 for n = 99 (as BSDS)."""
    return torch.linspace(1.0 / (n + 1), n / (n + 1.0), n)


def _as_thresholds(thresholds: Sequence[float] | Tensor | None) -> Tensor:
    t = default_thresholds() if thresholds is None else torch.as_tensor(thresholds, dtype=torch.float32)
    t = t.flatten().float()
    if t.numel() == 0 or bool(((t <= 0) | (t >= 1)).any()):
        raise ValueError(f"thresholds: need at least one value, all in (0, 1); got {t.tolist()}")
    return t.sort().values


def _dense_pred(pred: Tensor, target: Tensor) -> Tensor:
    """float32 prediction at the label's resolution (cast before interpolating: bf16 is coarse)."""
    pred = pred.detach().float()
    if pred.shape[-2:] != target.shape[-2:]:
        pred = F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return pred


def _ratio(num: float, den: float, scale: float = 1.0) -> float:
    """num / den * scale, NaN when there is nothing to divide by (an undefined metric)."""
    return num / den * scale if den > 0 else NAN


def _count_at_or_above(values: Tensor, thresholds: Tensor) -> Tensor:
    """(K,) int64 on the CPU: for each threshold t_k, how many `values` are >= t_k.

    One pass whatever the number of thresholds: bucket each value by how many thresholds it
    reaches, histogram the buckets, then a reversed cumulative sum turns "reaches exactly k"
    into "reaches at least k". Memory O(N + K) instead of the O(N * K) of comparing all pairs.
    """
    thresholds = thresholds.to(values.device)
    reached = torch.searchsorted(thresholds, values.reshape(-1).contiguous(), right=True)
    hist = torch.bincount(reached, minlength=len(thresholds) + 1)
    return hist.flip(0).cumsum(0).flip(0)[1:].cpu()


def _f_beta(tp_p: Tensor, n_pred: Tensor, tp_r: Tensor, n_true: int | Tensor, beta2: float) -> Tensor:
    """F_beta per threshold from pooled counts: precision = tp_p / n_pred, recall = tp_r / n_true.

    Two true-positive counts because with a pixel tolerance (edges) "a prediction near a label"
    and "a label near a prediction" are counted separately. 0/0 gives 0, as BSDS does for a
    threshold with no prediction (so such a threshold never wins the maximum).
    """
    tp_p, n_pred, tp_r = tp_p.double(), n_pred.double(), tp_r.double()
    precision = tp_p / n_pred.clamp_min(1)
    recall = tp_r / torch.as_tensor(n_true, dtype=torch.float64).clamp_min(1)
    return (1 + beta2) * precision * recall / (beta2 * precision + recall).clamp_min(1e-12)


class Meter:
    """Base of the meters: `reset()`, `update(pred, batch)`, `compute()` and `per_class()`.

    `key` is the batch-dict entry holding the labels (the task name by default), so a meter can
    serve another task of the same kind.
    """

    key: str = ""

    def __init__(self, key: str | None = None):
        if key is not None:
            self.key = key
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, pred, batch: dict) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError

    def per_class(self) -> dict[str, dict[str, float]]:
        """{metric: {class name: value}} for meters with classes (empty otherwise); feeds pd.DataFrame."""
        return {}


def _class_names(names: Iterable[str] | None, n: int) -> list[str]:
    names = list(names or ())
    if names and len(names) != n:
        raise ValueError(f"class_names: {len(names)} names for {n} classes")
    return names or [str(i) for i in range(n)]


# ----------------------------------------------------------------------------------------------
# dense tasks


class SemsegMeter(Meter):
    """mIoU and pixel accuracy from a confusion matrix pooled over the split.

    mIoU averages the IoU of the classes present in the ground truth or in the prediction: a
    class absent from both has IoU 0/0, undefined, and counting it as 0 (or 1) would make the
    score depend on how many classes happen to be missing from the split.
    """

    key = "semseg"

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: Iterable[str] | None = None,
                 key: str | None = None):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.class_names = _class_names(class_names, self.num_classes)
        super().__init__(key)

    def reset(self) -> None:
        # rows: ground truth, columns: prediction
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    @torch.no_grad()
    def update(self, pred: Tensor, batch: dict) -> None:
        target = batch[self.key]
        if pred.dtype.is_floating_point:  # logits (B, C, h, w); already-decoded labels are accepted too
            pred = _dense_pred(pred, target).argmax(dim=1)
        valid = target != self.ignore_index
        gt, pr = target[valid].long(), pred[valid].long()
        both = torch.cat([gt, pr])
        # an out-of-range label would silently land in another class's cell of the flat bincount
        if both.numel() and (int(both.min()) < 0 or int(both.max()) >= self.num_classes):
            raise ValueError(f"{self.key}: labels or predictions outside [0, {self.num_classes}) (other than "
                             f"ignore = {self.ignore_index}); is num_classes right?")
        counts = torch.bincount(gt * self.num_classes + pr, minlength=self.num_classes**2)
        self.confusion += counts.reshape(self.num_classes, self.num_classes).cpu()

    def iou(self) -> Tensor:
        """(C,) IoU in %, NaN for classes absent from both ground truth and prediction."""
        cm = self.confusion.double()
        tp = cm.diag()
        union = cm.sum(0) + cm.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp_min(1) * 100, NAN)

    def compute(self) -> dict[str, float]:
        iou = self.iou()
        present = ~iou.isnan()
        total = int(self.confusion.sum())
        return {"miou": float(iou[present].mean()) if present.any() else NAN,
                "pixel_acc": _ratio(int(self.confusion.trace()), total, 100)}

    def per_class(self) -> dict[str, dict[str, float]]:
        return {"iou": dict(zip(self.class_names, self.iou().tolist(), strict=True))}


class DepthMeter(Meter):
    """RMSE (m), abs-rel and δ<1.25 (%) over all valid pixels (depth > 0) of the split."""

    key = "depth"
    min_depth = 1e-3  # predictions are clamped to this for the ratio of δ<1.25 (a ratio needs p > 0)

    def reset(self) -> None:
        self.n = 0
        self.sq_err = 0.0
        self.rel_err = 0.0
        self.n_delta1 = 0

    @torch.no_grad()
    def update(self, pred: Tensor, batch: dict) -> None:
        target = batch[self.key].float()
        valid = target > 0
        p, g = _dense_pred(pred, target)[valid], target[valid]
        ratio = torch.maximum(p.clamp_min(self.min_depth) / g, g / p.clamp_min(self.min_depth))
        self.n += int(valid.sum())
        self.sq_err += float(((p - g) ** 2).sum())
        self.rel_err += float(((p - g).abs() / g).sum())
        self.n_delta1 += int((ratio < 1.25).sum())

    def compute(self) -> dict[str, float]:
        mse = _ratio(self.sq_err, self.n)
        return {"rmse": math.sqrt(mse) if self.n else NAN, "abs_rel": _ratio(self.rel_err, self.n),
                "delta1": _ratio(self.n_delta1, self.n, 100)}


class NormalsMeter(Meter):
    """Angle (degrees) between the normalised prediction and the label, over valid pixels.

    Keeps every angle (float32, on the CPU) for the exact median: 4 bytes per valid pixel of the
    split, e.g. ~0.8 GB for the 654 NYUv2 test images at 480x640.
    """

    key = "normals"
    thresholds = (11.25, 22.5, 30.0)

    def reset(self) -> None:
        self.angles: list[Tensor] = []

    @torch.no_grad()
    def update(self, pred: Tensor, batch: dict) -> None:
        target = batch[self.key].float()
        valid = target.abs().sum(dim=1) > 0  # (B, H, W); an all-zero label = missing
        p = F.normalize(_dense_pred(pred, target), dim=1).movedim(1, -1)[valid]  # (N, 3)
        g = F.normalize(target, dim=1).movedim(1, -1)[valid]
        # atan2(|p x g|, p . g) rather than acos(p . g): acos is ill-conditioned near 0° and 180°
        # (float32 rounding of the dot product alone gives ~0.02° for identical vectors).
        angle = torch.atan2(torch.linalg.cross(p, g).norm(dim=-1), (p * g).sum(dim=-1))
        self.angles.append(torch.rad2deg(angle).cpu())

    def compute(self) -> dict[str, float]:
        angles = torch.cat(self.angles).numpy() if self.angles else np.zeros(0, np.float32)
        if angles.size == 0:
            return {"mean_angle": NAN, "median_angle": NAN} | {f"within_{t:g}": NAN for t in self.thresholds}
        out = {"mean_angle": float(angles.mean(dtype=np.float64)),
               "median_angle": float(np.median(angles))}  # the middle pair's mean for an even count
        for t in self.thresholds:
            out[f"within_{t:g}"] = float((angles < t).mean(dtype=np.float64) * 100)
        return out


class _BinaryMapMeter(Meter):
    """Shared by saliency and edges: sigmoid of (B, 1, h, w) logits vs a {0, 1} label, 255 = ignore;
    per-threshold counts accumulated over the split."""

    def __init__(self, thresholds: Sequence[float] | Tensor | None = None, key: str | None = None):
        self.thresholds = _as_thresholds(thresholds)
        super().__init__(key)

    def reset(self) -> None:
        k = len(self.thresholds)
        self.tp_p = torch.zeros(k, dtype=torch.int64)  # predicted positives that count as correct
        self.n_pred = torch.zeros(k, dtype=torch.int64)  # predicted positives
        self.tp_r = torch.zeros(k, dtype=torch.int64)  # label positives that are found
        self.n_true = 0  # label positives
        self.n_valid = 0  # pixels not ignored

    def _inputs(self, pred: Tensor, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        """probabilities, valid mask, positive-label mask; all (B, 1, H, W)."""
        target = batch[self.key]
        valid = target != 255
        self.n_valid += int(valid.sum())
        return torch.sigmoid(_dense_pred(pred, target)), valid, (target > 0.5) & valid


class SaliencyMeter(_BinaryMapMeter):
    """maxF (F_beta, beta^2 = 0.3, in %) and MAE of the sigmoid map, over valid pixels.

    Pooling: for every threshold, precision and recall come from true-positive / predicted /
    labelled pixel counts summed over the whole split, and maxF is the best F over thresholds.
    Many salient-object benchmarks (and the ASTMT / MTI-Net code) instead average per-image
    precision and recall before forming F; pooling keeps this meter consistent with the others
    and stays defined for images without any salient pixel.
    """

    key = "sal"
    beta2 = 0.3  # weighs precision over recall, the salient-object-detection standard

    def reset(self) -> None:
        super().reset()
        self.abs_err = 0.0

    @torch.no_grad()
    def update(self, pred: Tensor, batch: dict) -> None:
        prob, valid, pos = self._inputs(pred, batch)
        # without a tolerance a correct prediction and a found label are the same pixels: tp_p = tp_r
        tp = _count_at_or_above(prob[pos], self.thresholds)
        self.tp_p += tp
        self.tp_r += tp
        self.n_pred += _count_at_or_above(prob[valid], self.thresholds)
        self.n_true += int(pos.sum())
        self.abs_err += float((prob[valid] - pos[valid].float()).abs().sum())

    def compute(self) -> dict[str, float]:
        f = _f_beta(self.tp_p, self.n_pred, self.tp_r, self.n_true, self.beta2)
        return {"maxF": float(f.max()) * 100 if self.n_valid else NAN,
                "mae": _ratio(self.abs_err, self.n_valid)}


class EdgeMeter(_BinaryMapMeter):
    """ODS F-measure (%, beta = 1): the best single threshold for the whole split.

    For each threshold t the predicted edges are the pixels with sigmoid >= t. Precision = the
    share of predicted pixels within `tolerance` pixels (Chebyshev distance) of a label edge;
    recall = the share of label edge pixels within `tolerance` of a predicted pixel; counts are
    pooled over the split, pixels labelled 255 take no part (neither as predictions nor labels).

    This approximates the BSDS protocol, which thins predictions to one-pixel-wide edges and
    matches predicted and label pixels one-to-one within a tolerance relative to the image
    diagonal; here there is no thinning and no one-to-one matching (a thick prediction along a
    label edge keeps full precision), so absolute values are not comparable to published ODS.

    Both tolerance tests are max-poolings: dilating the label edge map marks the pixels near a
    label edge, and max-pooling the *probability* map gives, at each pixel, the highest
    probability within the tolerance, so "a predicted pixel nearby at threshold t" is "pooled
    probability >= t" — one pass for all thresholds.
    """

    key = "edge"

    def __init__(self, tolerance: int = 1, thresholds: Sequence[float] | Tensor | None = None,
                 key: str | None = None):
        if tolerance < 0:
            raise ValueError(f"tolerance: must be >= 0 pixels, got {tolerance}")
        self.tolerance = int(tolerance)
        super().__init__(thresholds, key)

    def _dilate(self, x: Tensor) -> Tensor:
        r = self.tolerance
        return F.max_pool2d(x, kernel_size=2 * r + 1, stride=1, padding=r) if r else x

    @torch.no_grad()
    def update(self, pred: Tensor, batch: dict) -> None:
        prob, valid, edge = self._inputs(pred, batch)
        near_edge = self._dilate(edge.float()) > 0
        # ignored pixels cannot be predictions: -1 is below every threshold, also after pooling
        best_nearby = self._dilate(torch.where(valid, prob, -1.0))
        self.tp_p += _count_at_or_above(prob[valid & near_edge], self.thresholds)
        self.n_pred += _count_at_or_above(prob[valid], self.thresholds)
        self.tp_r += _count_at_or_above(best_nearby[edge], self.thresholds)
        self.n_true += int(edge.sum())

    def compute(self) -> dict[str, float]:
        if not self.n_valid:
            return {"odsF": NAN}
        return {"odsF": float(_f_beta(self.tp_p, self.n_pred, self.tp_r, self.n_true, 1.0).max()) * 100}


# ----------------------------------------------------------------------------------------------
# image-level tasks


class SceneMeter(Meter):
    """Top-1 accuracy (%) of (B, S) logits over the samples with a scene label (>= 0)."""

    key = "scene"

    def reset(self) -> None:
        self.correct = 0
        self.n = 0

    @torch.no_grad()
    def update(self, pred: Tensor, batch: dict) -> None:
        target = batch[self.key]
        valid = target >= 0
        self.correct += int((pred.detach().float().argmax(dim=1)[valid] == target[valid]).sum())
        self.n += int(valid.sum())

    def compute(self) -> dict[str, float]:
        return {"accuracy": _ratio(self.correct, self.n, 100)}


class DetectionMeter(Meter):
    """COCO-style mAP@0.5 and mAP@[.5:.95] (%) through torchmetrics' MeanAveragePrecision (pycocotools).

    `update` takes either decoded detections (a list of dicts with boxes xyxy in pixels, scores
    and 0-based labels, one per image) or the detector's raw output dict, decoded here with
    `mtl_core.models.detection.postprocess`. Ground truth: batch["boxes"] / batch["labels"].
    As in COCO, a class without any ground-truth box has an undefined AP (NaN per class) and is
    left out of the mean; at most 100 detections per image (the highest scored) count.
    """

    def __init__(self, num_classes: int, class_names: Iterable[str] | None = None):
        self.num_classes = int(num_classes)
        self.class_names = _class_names(class_names, self.num_classes)
        super().__init__()

    def reset(self) -> None:
        from torchmetrics.detection import MeanAveragePrecision

        # extended_summary exposes COCOeval's precision array, from which the per-class AP@0.5
        # is read (torchmetrics only reports per-class AP@[.5:.95]); no second evaluation needed.
        self.metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True,
                                           extended_summary=True, backend="pycocotools")
        self.n_images = 0
        self._result: dict | None = None

    @torch.no_grad()
    def update(self, pred, batch: dict) -> None:
        if isinstance(pred, Mapping):  # raw head outputs
            from .models.detection import postprocess  # lazy: the detector is optional for metrics

            pred = postprocess(pred, tuple(batch["image"].shape[-2:]))
        preds = [{"boxes": d["boxes"].detach().float().cpu(), "scores": d["scores"].detach().float().cpu(),
                  "labels": d["labels"].detach().long().cpu()} for d in pred]
        targets = [{"boxes": b.detach().float().cpu().reshape(-1, 4), "labels": l.detach().long().cpu()}
                   for b, l in zip(batch["boxes"], batch["labels"], strict=True)]
        if len(preds) != len(targets):
            raise ValueError(f"detection: {len(preds)} predictions for {len(targets)} images")
        self.metric.update(preds, targets)
        self.n_images += len(targets)
        self._result = None

    def _compute(self) -> dict:
        if self._result is None:  # COCO evaluation is the slow part: once per state
            self._result = self.metric.compute()
        return self._result

    @staticmethod
    def _percent(value: Tensor | float) -> float:
        value = float(value)
        return value * 100 if value >= 0 else NAN  # COCOeval's -1 = undefined (no ground truth)

    def compute(self) -> dict[str, float]:
        if not self.n_images:
            return {"map50": NAN, "map": NAN}
        r = self._compute()
        return {"map50": self._percent(r["map_50"]), "map": self._percent(r["map"])}

    def per_class(self) -> dict[str, dict[str, float]]:
        """{"ap": {class: AP@[.5:.95]}, "ap50": {class: AP@0.5}} in %; NaN for a class without labels."""
        ap = dict.fromkeys(self.class_names, NAN)
        ap50 = dict.fromkeys(self.class_names, NAN)
        if self.n_images:
            r = self._compute()
            classes = r["classes"].reshape(-1).tolist()
            if "precision" in r:  # absent when COCOeval did not run (no image at all)
                # precision: (IoU thresholds, recall thresholds, classes, areas, max dets); area 0 =
                # "all", last max-dets = 100; AP@0.5 = the mean over recall thresholds, as COCOeval
                # summarises it (entries of -1 mark a class without ground truth).
                i50 = int(np.argmin(np.abs(np.asarray(self.metric.iou_thresholds) - 0.5)))
                prec = r["precision"][i50, :, :, 0, -1]
                for k, c in enumerate(classes):
                    p = prec[:, k]
                    ap50[self.class_names[c]] = float(p.mean()) * 100 if bool((p >= 0).all()) else NAN
            for c, v in zip(classes, r["map_per_class"].reshape(-1).tolist(), strict=True):
                ap[self.class_names[c]] = self._percent(v)
        return {"ap": ap, "ap50": ap50}


# ----------------------------------------------------------------------------------------------
# suite and Δm

_METERS = {
    "semseg": lambda spec: SemsegMeter(spec.channels, class_names=spec.classes or None),
    "depth": lambda spec: DepthMeter(),
    "normals": lambda spec: NormalsMeter(),
    "edge": lambda spec: EdgeMeter(),
    "sal": lambda spec: SaliencyMeter(),
    "scene": lambda spec: SceneMeter(),
    "detection": lambda spec: DetectionMeter(spec.channels, class_names=spec.classes or None),
    # human parts are a segmentation of their own label map: the same mIoU, on batch["human_parts"]
    "human_parts": lambda spec: SemsegMeter(spec.channels, class_names=spec.classes or None,
                                            key="human_parts"),
}


def make_meter(spec: TaskSpec) -> Meter:
    """The meter for a task spec; its compute() keys are exactly `spec.metrics`."""
    if spec.name not in _METERS:
        raise ValueError(f"task {spec.name!r}: no meter; known: {list(_METERS)}")
    return _METERS[spec.name](spec)


class MetricSuite:
    """One meter per task. `update(outputs, batch)` evaluates the tasks that the model output
    predicts (an auxiliary task supervised only through out["deep"] has no final prediction and
    is skipped); `compute()` returns {task: {metric: value}} for the tasks that were evaluated."""

    def __init__(self, tasks: Mapping[str, TaskSpec]):
        self.tasks = dict(tasks)
        self.meters = {name: make_meter(spec) for name, spec in self.tasks.items()}
        self.seen: set[str] = set()

    def reset(self) -> None:
        for meter in self.meters.values():
            meter.reset()
        self.seen.clear()

    @torch.no_grad()
    def update(self, outputs: Mapping, batch: dict) -> None:
        for name, meter in self.meters.items():
            if name in outputs:
                meter.update(outputs[name], batch)
                self.seen.add(name)

    def compute(self) -> dict[str, dict[str, float]]:
        return {name: meter.compute() for name, meter in self.meters.items() if name in self.seen}

    def per_class(self) -> dict[str, dict[str, dict[str, float]]]:
        return {name: pc for name, meter in self.meters.items()
                if name in self.seen and (pc := meter.per_class())}


def delta_m(results: Mapping[str, Mapping[str, float]], baselines: Mapping[str, Mapping[str, float]],
            tasks_or_directions: Mapping[str, TaskSpec | Mapping[str, bool]],
            metrics: Mapping[str, Sequence[str]] | None = None) -> float:
    """Multi-task performance Δm in % (Maninis et al. 2019; MTI-Net; LibMTL):

        Δm = (1/T) Σ_t  mean_{m in metrics of t}  (−1)^{l_m} (M_{t,m} − B_{t,m}) / B_{t,m} × 100,

    l_m = 1 when lower is better, so Δm > 0 means better than the single-task baselines. A task
    with several metrics is averaged over its metrics first (LibMTL), so each task weighs 1/T
    whatever its number of metrics.

    results / baselines: {task: {metric: value}}. tasks_or_directions: {task: TaskSpec} or
    {task: {metric: higher_is_better}}; its tasks are the T tasks. metrics: optional
    {task: [metric names]}; by default every metric of the task (the spec's `metrics`, or the
    direction dict's keys) present in both results and baselines.
    """
    metrics = dict(metrics or {})
    extra = set(metrics) - set(tasks_or_directions)
    if extra:
        raise ValueError(f"metrics: tasks {sorted(extra)} are not among {list(tasks_or_directions)}")
    if not tasks_or_directions:
        raise ValueError("delta_m: no tasks")
    per_task = []
    for task, spec in tasks_or_directions.items():
        if isinstance(spec, TaskSpec):
            directions, names = spec.higher_is_better, spec.metrics
        else:
            directions, names = dict(spec), tuple(spec)
        res, base = results.get(task), baselines.get(task)
        if res is None or base is None:
            raise ValueError(f"delta_m: task {task!r} is missing from the "
                             f"{'results' if res is None else 'baselines'}")
        if task in metrics:
            names = tuple(metrics[task])
            for m in names:
                where = [w for w, d in (("results", res), ("baselines", base), ("directions", directions))
                         if m not in d]
                if where:
                    raise ValueError(f"delta_m: metric {task}/{m} is missing from the {' and '.join(where)}")
        else:
            names = tuple(m for m in names if m in res and m in base)
        if not names:
            raise ValueError(f"delta_m: task {task!r} has no metric present in both results and baselines")
        terms = []
        for m in names:
            value, ref = float(res[m]), float(base[m])
            if ref == 0 or not math.isfinite(ref) or not math.isfinite(value):
                raise ValueError(f"delta_m: {task}/{m}: result {value} vs baseline {ref}; the relative "
                                 "change needs a finite, nonzero baseline and a finite result")
            sign = 1.0 if directions[m] else -1.0
            terms.append(sign * (value - ref) / ref * 100)
        per_task.append(sum(terms) / len(terms))
    return sum(per_task) / len(per_task)
