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

Protocols (`protocol=` of every meter, `make_meter`, `MetricSuite` and `delta_m`):
- **"default"**, for the synthetic studies: the conventions above, and a cheap edge F-measure
  (a pixel tolerance, no thinning: see `EdgeMeter`).
- **"official"**: MTI-Net's evaluation as published (SimonVandenhende/Multi-Task-Learning-PyTorch,
  `evaluation/eval_*.py`, scoring what `save_model_predictions` wrote: 8-bit PNGs, depth in .mat):
  semseg / human-parts mIoU over *all* classes (a class never seen counts IoU 0); depth with
  predictions <= 0 replaced by 1e-9 and an extra "log_rmse"; saliency maxF (F1 from precision
  and recall averaged over images) and an extra "miou", both at 15 thresholds 0.20 ... 0.90 with
  a strict ">"; edges by the BSDS protocol (thinning, one-to-one matching, 99 thresholds, as
  seism scores them); normals unchanged. Δm then uses MTI-Net's metric per task
  (`OFFICIAL_PRIMARY`: saliency mIoU, not maxF). Extra keys are appended after the spec's
  metrics; no key changes meaning, only how it is computed.
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

__all__ = ["OFFICIAL_EXTRA_METRICS", "OFFICIAL_PRIMARY", "PROTOCOLS", "DepthMeter", "DetectionMeter",
           "EdgeMeter", "Meter", "MetricSuite", "NormalsMeter", "SaliencyMeter", "SceneMeter", "SemsegMeter",
           "default_thresholds", "delta_m", "make_meter", "metric_directions", "metric_names",
           "primary_metrics", "thin_edges"]

PROTOCOLS = ("default", "official")

# Metrics the official protocol reports on top of a task's `TaskSpec.metrics`, with their direction
# (True = higher is better): eval_depth also gives the log-RMSE, eval_sal the mIoU.
OFFICIAL_EXTRA_METRICS: dict[str, dict[str, bool]] = {"depth": {"log_rmse": False}, "sal": {"miou": True}}

# The one metric per task in MTI-Net's Δm (`calculate_multi_task_performance`,
# evaluation/evaluate_utils.py): saliency enters through its mIoU, not its maxF.
OFFICIAL_PRIMARY = {"semseg": "miou", "human_parts": "miou", "sal": "miou", "depth": "rmse",
                    "normals": "mean_angle", "edge": "odsF"}


# ----------------------------------------------------------------------------------------------
# shared helpers


def default_thresholds(n: int = 99) -> Tensor:
    """`n` evenly spaced thresholds strictly inside (0, 1): 0.01 ... 0.99 for n = 99 (as BSDS)."""
    return torch.linspace(1.0 / (n + 1), n / (n + 1.0), n)


def _check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r}: choose from {list(PROTOCOLS)}")
    return protocol


def _as_thresholds(thresholds: Sequence[float] | Tensor | None, default: Sequence[float] | None = None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    if thresholds is None:
        thresholds = default_thresholds() if default is None else default
    t = torch.as_tensor(thresholds, dtype=dtype).flatten()
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


def _count_at_or_above(values: Tensor, thresholds: Tensor, strict: bool = False) -> Tensor:
    """(K,) int64 on the CPU: for each threshold t_k, how many `values` are >= t_k (> t_k if strict).

    One pass whatever the number of thresholds: bucket each value by how many thresholds it
    reaches, histogram the buckets, then a reversed cumulative sum turns "reaches exactly k"
    into "reaches at least k". Memory O(N + K) instead of the O(N * K) of comparing all pairs.
    """
    thresholds = thresholds.to(values.device, values.dtype)
    # right=True counts the thresholds <= value (value reaches t), right=False those < value
    reached = torch.searchsorted(thresholds, values.reshape(-1).contiguous(), right=not strict)
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


def _to_8bit(prob: Tensor) -> Tensor:
    """float64 probabilities as the official evaluation reads them back from its PNGs:
    `save_model_predictions` writes (255 * sigmoid).astype(uint8), a truncation, and eval_sal /
    seism divide by 255 again. Comparing q / 255 with the thresholds in float64 decides the
    ties exactly (e.g. q = 51 is 0.2, not above the threshold 0.2)."""
    return torch.floor(prob.float() * 255).double() / 255


class Meter:
    """Base of the meters: `reset()`, `update(pred, batch)`, `compute()` and `per_class()`.

    `key` is the batch-dict entry holding the labels (the task name by default), so a meter can
    serve another task of the same kind. `protocol` is "default" or "official" (module docstring).
    """

    key: str = ""

    def __init__(self, key: str | None = None, protocol: str = "default"):
        if key is not None:
            self.key = key
        self.protocol = _check_protocol(protocol)
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

    Default protocol: mIoU averages the IoU of the classes present in the ground truth or in the
    prediction: a class absent from both has IoU 0/0, undefined, and counting it as 0 (or 1) would
    make the score depend on how many classes happen to be missing from the split.

    Official protocol: the mean over all `num_classes`, an absent class counting IoU 0, as
    MTI-Net's eval_semseg / eval_human_parts divide tp by max(tp + fp + fn, 1e-8).
    `skip_background_images` (set by `make_meter` for human parts under that protocol) leaves
    out images whose label map is background (0) only: eval_human_parts skips an image whose
    labels are a single value, 0 or 255, which is how it stores images without a person.
    """

    key = "semseg"

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: Iterable[str] | None = None,
                 key: str | None = None, protocol: str = "default", skip_background_images: bool = False):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.class_names = _class_names(class_names, self.num_classes)
        self.skip_background_images = bool(skip_background_images)
        super().__init__(key, protocol)

    def reset(self) -> None:
        # rows: ground truth, columns: prediction
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    @torch.no_grad()
    def update(self, pred: Tensor, batch: dict) -> None:
        target = batch[self.key]
        if pred.dtype.is_floating_point:  # logits (B, C, h, w); already-decoded labels are accepted too
            pred = _dense_pred(pred, target).argmax(dim=1)
        if self.skip_background_images:
            keep = ~(target == 0).flatten(1).all(dim=1)
            target, pred = target[keep], pred[keep]
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
        """(C,) IoU in %; a class absent from both ground truth and prediction is NaN (default
        protocol) or 0 (official)."""
        cm = self.confusion.double()
        tp = cm.diag()
        union = cm.sum(0) + cm.sum(1) - tp
        absent = 0.0 if self.protocol == "official" else NAN
        return torch.where(union > 0, tp / union.clamp_min(1) * 100, absent)

    def compute(self) -> dict[str, float]:
        iou = self.iou()
        present = ~iou.isnan()  # every class under the official protocol
        total = int(self.confusion.sum())
        return {"miou": float(iou[present].mean()) if total and present.any() else NAN,
                "pixel_acc": _ratio(int(self.confusion.trace()), total, 100)}

    def per_class(self) -> dict[str, dict[str, float]]:
        return {"iou": dict(zip(self.class_names, self.iou().tolist(), strict=True))}


class DepthMeter(Meter):
    """RMSE (m), abs-rel and δ<1.25 (%) over all valid pixels (depth > 0) of the split.

    Official protocol (MTI-Net's eval_depth): predictions <= 0 are replaced by 1e-9 before
    every error, and "log_rmse" = sqrt(mean((ln g - ln p)^2)) is added; errors are summed over
    all valid pixels of the split, as there.
    """

    key = "depth"
    min_depth = 1e-3  # predictions are clamped to this for the ratio of δ<1.25 (a ratio needs p > 0)
    official_floor = 1e-9  # eval_depth: pred[pred <= 0] = 1e-9, so that the log is defined

    def reset(self) -> None:
        self.n = 0
        self.sq_err = 0.0
        self.sq_log_err = 0.0
        self.rel_err = 0.0
        self.n_delta1 = 0

    @torch.no_grad()
    def update(self, pred: Tensor, batch: dict) -> None:
        target = batch[self.key].float()
        valid = target > 0
        p, g = _dense_pred(pred, target)[valid], target[valid]
        if self.protocol == "official":
            p, g = p.double(), g.double()
            p = torch.where(p > 0, p, self.official_floor)
            self.sq_log_err += float(((g.log() - p.log()) ** 2).sum())
        ratio = torch.maximum(p.clamp_min(self.min_depth) / g, g / p.clamp_min(self.min_depth))
        self.n += int(valid.sum())
        self.sq_err += float(((p - g) ** 2).sum())
        self.rel_err += float(((p - g).abs() / g).sum())
        self.n_delta1 += int((ratio < 1.25).sum())

    def compute(self) -> dict[str, float]:
        out = {"rmse": math.sqrt(self.sq_err / self.n) if self.n else NAN,
               "abs_rel": _ratio(self.rel_err, self.n), "delta1": _ratio(self.n_delta1, self.n, 100)}
        if self.protocol == "official":
            out["log_rmse"] = math.sqrt(self.sq_log_err / self.n) if self.n else NAN
        return out


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

    def __init__(self, thresholds: Sequence[float] | Tensor | None = None, key: str | None = None,
                 protocol: str = "default", default: Sequence[float] | None = None,
                 dtype: torch.dtype = torch.float32):
        self.thresholds = _as_thresholds(thresholds, default, dtype)
        super().__init__(key, protocol)

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


# eval_sal_predictions (MTI-Net) evaluates saliency at np.linspace(0.2, 0.9, 15)
OFFICIAL_SAL_THRESHOLDS = tuple(np.linspace(0.2, 0.9, 15).tolist())


class SaliencyMeter(_BinaryMapMeter):
    """maxF (%) and MAE of the sigmoid map over valid pixels; the official protocol adds mIoU (%).

    Default protocol: maxF is F_beta with beta^2 = 0.3 (the salient-object-detection standard),
    at 99 thresholds (pixel >= t); for every threshold, precision and recall come from
    true-positive / predicted / labelled pixel counts summed over the whole split, and maxF is
    the best F over thresholds. Pooling keeps this meter consistent with the others and stays
    defined for images without any salient pixel.

    Official protocol (MTI-Net's eval_sal, with `jaccard` and `precision_recall` of
    evaluation/jaccard.py): the map is read back at 8 bits and a pixel is salient at t when its
    value is strictly above t, t = 0.20, 0.25, ..., 0.90. Per image and threshold: precision
    tp / (tp + fp), recall tp / (tp + fn) (with the official + 1e-12 in both denominators, so
    0/0 gives 0) and IoU tp / (tp + fp + fn), which is 1 for an image with neither a salient
    label nor a salient prediction. These are averaged over the images; then maxF is the best
    F1 = 2 P R / (P + R) of the averaged precision and recall (beta = 1), and mIoU the best
    averaged IoU. Pixels labelled 255 are void (jaccard's void_pixels) and an image without any
    valid pixel is left out. MAE is the same in both protocols (eval_sal reports none).
    """

    key = "sal"
    beta2 = 0.3  # default protocol: weighs precision over recall

    def __init__(self, thresholds: Sequence[float] | Tensor | None = None, key: str | None = None,
                 protocol: str = "default"):
        official = _check_protocol(protocol) == "official"
        super().__init__(thresholds, key, protocol, default=OFFICIAL_SAL_THRESHOLDS if official else None,
                         dtype=torch.float64 if official else torch.float32)

    def reset(self) -> None:
        super().reset()
        self.abs_err = 0.0
        k = len(self.thresholds)
        # official protocol: per-threshold sums over images of precision, recall and IoU
        self.sum_prec = torch.zeros(k, dtype=torch.float64)
        self.sum_rec = torch.zeros(k, dtype=torch.float64)
        self.sum_iou = torch.zeros(k, dtype=torch.float64)
        self.n_images = 0

    @torch.no_grad()
    def update(self, pred: Tensor, batch: dict) -> None:
        prob, valid, pos = self._inputs(pred, batch)
        self.abs_err += float((prob[valid] - pos[valid].float()).abs().sum())
        if self.protocol == "official":
            self._update_per_image(_to_8bit(prob), valid, pos)
            return
        # without a tolerance a correct prediction and a found label are the same pixels: tp_p = tp_r
        tp = _count_at_or_above(prob[pos], self.thresholds)
        self.tp_p += tp
        self.tp_r += tp
        self.n_pred += _count_at_or_above(prob[valid], self.thresholds)
        self.n_true += int(pos.sum())

    def _update_per_image(self, value: Tensor, valid: Tensor, pos: Tensor) -> None:
        for v, ok, p in zip(value, valid, pos, strict=True):
            if not bool(ok.any()):
                continue
            n_pred = _count_at_or_above(v[ok], self.thresholds, strict=True).double()
            tp = _count_at_or_above(v[p], self.thresholds, strict=True).double()
            n_pos = float(p.sum())
            self.sum_prec += tp / (n_pred + 1e-12)
            self.sum_rec += tp / (n_pos + 1e-12)
            union = n_pos + n_pred - tp
            self.sum_iou += torch.where(union > 0, tp / union.clamp_min(1), 1.0)
            self.n_images += 1

    def compute(self) -> dict[str, float]:
        mae = _ratio(self.abs_err, self.n_valid)
        if self.protocol == "official":
            if not self.n_images:
                return {"maxF": NAN, "mae": mae, "miou": NAN}
            precision, recall = self.sum_prec / self.n_images, self.sum_rec / self.n_images
            f = 2 * precision * recall / (precision + recall + 1e-12)
            return {"maxF": float(f.max()) * 100, "mae": mae,
                    "miou": float((self.sum_iou / self.n_images).max()) * 100}
        f = _f_beta(self.tp_p, self.n_pred, self.tp_r, self.n_true, self.beta2)
        return {"maxF": float(f.max()) * 100 if self.n_valid else NAN, "mae": mae}


# ----------------------------------------------------------------------------------------------
# edges: thinning for the BSDS protocol




def thin_edges(maps: np.ndarray | Tensor) -> np.ndarray:
    """Binary maps (..., H, W) thinned to one-pixel-wide, 8-connected lines: MATLAB's
    bwmorph(map, 'thin', Inf), which BSDS / seism apply to thresholded edge maps. scikit-image's
    `thin` implements the same algorithm (Guo & Hall 1989, with bwmorph's look-up table)."""
    from skimage.morphology import thin

    maps = np.asarray(maps.cpu() if isinstance(maps, Tensor) else maps, dtype=bool)
    shape = maps.shape
    if maps.ndim < 2 or maps.size == 0:
        raise ValueError(f"thin_edges: need maps of shape (..., H, W), got {shape}")
    flat = maps.reshape(-1, *shape[-2:])
    return np.stack([thin(m) if m.any() else m for m in flat]).reshape(shape)


class EdgeMeter(_BinaryMapMeter):
    """ODS F-measure (%, beta = 1): the best single threshold for the whole split.

    How predicted and label edge pixels are matched (`matching`; "bsds" under the official
    protocol, "tolerance" under the default one):

    "tolerance" (cheap; for the synthetic studies). For each threshold t the predicted edges are
    the pixels with sigmoid >= t. Precision = the share of predicted pixels within `tolerance`
    pixels (Chebyshev distance) of a label edge; recall = the share of label edge pixels within
    `tolerance` of a predicted pixel; counts are pooled over the split, pixels labelled 255 take
    no part (neither as predictions nor labels). There is no thinning and no one-to-one matching:
    every predicted pixel near a label edge counts, so a (2 x tolerance + 1)-pixel band along it,
    or two parallel responses on either side of it, score full precision, and values are not
    comparable to published ODS. Both tolerance tests are
    max-poolings: dilating the label edge map marks the pixels near a label edge, and
    max-pooling the *probability* map gives, at each pixel, the highest probability within the
    tolerance, so "a predicted pixel nearby at threshold t" is "pooled probability >= t" — one
    pass for all thresholds.

    "bsds": the BSDS boundary benchmark (Martin, Fowlkes & Malik, PAMI 2004) as seism runs it on
    MTI-Net's PASCAL-Context edges (eval_edge_predictions; seism's eval_cont and edgesEvalImg).
    At each threshold t = 0.01 ... 0.99 (the list eval_edge writes) the map is binarised
    (value >= t) and thinned (`thin_edges`), and so is the label edge map. Predicted and label
    pixels are matched one-to-one, a pair being allowed only within `max_dist` x the image
    diagonal, by the minimum-cost assignment of BSDS's correspondPixels (pyEdgeEval's port):
    precision = matched predictions / predictions and recall = matched labels / labels, counts
    summed over the split, then ODS = the best F over thresholds. Under the official protocol the
    map is first read back at 8 bits like the PNGs seism reads. Pixels labelled 255 are removed
    from both maps before thinning; an image without a valid pixel is left out.
    max_dist = 0.0075 is the BSDS / seism default used for PASCAL-Context; NYUD multi-task work
    after MTI-Net used 0.011. The tolerance shrinks with the image: 0.0075 x diagonal is 0.68 px
    at 64 x 64 (0.011: 0.996 px), i.e. only pixels at the same position match; the largest
    one-to-one matching is then the intersection of the two thinned maps, counted directly. From
    one pixel on, pyEdgeEval's `correspond_pixels` runs per image and threshold. Like the
    original it solves the assignment on a sparse, randomly drawn outlier graph seeded by the
    clock, which now and then leaves a matchable pair unmatched (a few per thousand on dense
    random maps): counts can differ slightly between runs, as with the MATLAB benchmark.

    Cost, one CPU thread, 300 images of 64 x 64: "tolerance" 0.1-0.2 s per pass; "bsds" at 0.0075
    or 0.011 (same-position matching) 1-3 s, mostly thinning 29,700 thresholded maps; "bsds" with a
    tolerance of 1 px or more at that size (max_dist >= 0.0111) about 3 minutes, all assignment.
    At 480 x 640 "bsds" takes about 8-20 s per image: it is for final numbers, not for every
    validation pass, which is why the default protocol keeps "tolerance".
    """

    key = "edge"
    bsds_thresholds = tuple(k / 100 for k in range(1, 100))  # '%.2f' of np.arange(0.01, 1.00, 0.01)
    _chunk_values = 1 << 25  # thresholded pixels (images x thresholds x H x W) thinned at once

    def __init__(self, tolerance: int = 1, thresholds: Sequence[float] | Tensor | None = None,
                 key: str | None = None, protocol: str = "default", matching: str | None = None,
                 max_dist: float = 0.0075):
        if tolerance < 0:
            raise ValueError(f"tolerance: must be >= 0 pixels, got {tolerance}")
        protocol = _check_protocol(protocol)
        matching = matching or ("bsds" if protocol == "official" else "tolerance")
        if matching not in ("tolerance", "bsds"):
            raise ValueError(f"matching={matching!r}: choose 'tolerance' or 'bsds'")
        if not 0 < max_dist < 1:
            raise ValueError(f"max_dist: a fraction of the image diagonal in (0, 1), got {max_dist}")
        self.tolerance = int(tolerance)
        self.matching = matching
        self.max_dist = float(max_dist)
        bsds = matching == "bsds"
        super().__init__(thresholds, key, protocol, default=self.bsds_thresholds if bsds else None,
                         dtype=torch.float64 if bsds else torch.float32)

    def _dilate(self, x: Tensor) -> Tensor:
        r = self.tolerance
        return F.max_pool2d(x, kernel_size=2 * r + 1, stride=1, padding=r) if r else x

    @torch.no_grad()
    def update(self, pred: Tensor, batch: dict) -> None:
        prob, valid, edge = self._inputs(pred, batch)
        if self.matching == "bsds":
            self._update_bsds(prob, valid, edge)
            return
        near_edge = self._dilate(edge.float()) > 0
        # ignored pixels cannot be predictions: -1 is below every threshold, also after pooling
        best_nearby = self._dilate(torch.where(valid, prob, -1.0))
        self.tp_p += _count_at_or_above(prob[valid & near_edge], self.thresholds)
        self.n_pred += _count_at_or_above(prob[valid], self.thresholds)
        self.tp_r += _count_at_or_above(best_nearby[edge], self.thresholds)
        self.n_true += int(edge.sum())

    def _update_bsds(self, prob: Tensor, valid: Tensor, edge: Tensor) -> None:
        keep = valid.flatten(1).any(dim=1)
        value = _to_8bit(prob) if self.protocol == "official" else prob.double()
        value = value[keep, 0].cpu().numpy()
        valid, edge = valid[keep, 0].cpu().numpy(), edge[keep, 0].cpu().numpy()
        if not len(value):
            return
        thresholds = self.thresholds.numpy()
        h, w = value.shape[-2:]
        same_place_only = self.max_dist * math.hypot(h, w) < 1  # no two distinct pixels are that close
        step = max(1, self._chunk_values // (len(thresholds) * h * w))
        for start in range(0, len(value), step):
            chunk = slice(start, start + step)
            gt = thin_edges(edge[chunk])  # (n, H, W)
            binary = (value[chunk, None] >= thresholds[:, None, None]) & valid[chunk, None]
            maps = thin_edges(binary)  # (n, K, H, W)
            if same_place_only:
                tp_p = tp_r = (maps & gt[:, None]).sum(axis=(-2, -1))
            else:
                tp_p, tp_r = self._correspond(maps, gt)
            self.tp_p += torch.from_numpy(np.asarray(tp_p, dtype=np.int64).sum(axis=0))
            self.tp_r += torch.from_numpy(np.asarray(tp_r, dtype=np.int64).sum(axis=0))
            self.n_pred += torch.from_numpy(maps.sum(axis=(-2, -1), dtype=np.int64).sum(axis=0))
            self.n_true += int(gt.sum())

    def _correspond(self, maps: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Matched predicted and matched label pixels per (image, threshold), by BSDS's assignment."""
        from pyEdgeEval import correspond_pixels  # compiled; only needed for tolerances of >= 1 px

        tp_p = np.zeros(maps.shape[:2], dtype=np.int64)
        tp_r = np.zeros(maps.shape[:2], dtype=np.int64)
        has_gt = gt.any(axis=(-2, -1))
        for i, k in np.argwhere(maps.any(axis=(-2, -1))):
            if has_gt[i]:
                match_pred, match_gt, _, _ = correspond_pixels(maps[i, k], gt[i], max_dist=self.max_dist)
                tp_p[i, k] = np.count_nonzero(match_pred)
                tp_r[i, k] = np.count_nonzero(match_gt)
        return tp_p, tp_r

    def compute(self) -> dict[str, float]:
        if not self.n_valid:
            return {"odsF": NAN}
        # BSDS/seism special cases (no prediction: P = 1, R = 0; no label: P = 0, R = 1) give F = 0,
        # as _f_beta does
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

    def __init__(self, num_classes: int, class_names: Iterable[str] | None = None, protocol: str = "default"):
        self.num_classes = int(num_classes)
        self.class_names = _class_names(class_names, self.num_classes)
        super().__init__(protocol=protocol)

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

def _semseg_meter(spec: TaskSpec, protocol: str, key: str | None = None, **options) -> SemsegMeter:
    # eval_human_parts leaves out images labelled background only (official protocol)
    options.setdefault("skip_background_images", protocol == "official" and spec.name == "human_parts")
    return SemsegMeter(spec.channels, class_names=spec.classes or None, key=key, protocol=protocol, **options)


_METERS = {
    "semseg": _semseg_meter,
    "depth": lambda spec, protocol, **options: DepthMeter(protocol=protocol, **options),
    "normals": lambda spec, protocol, **options: NormalsMeter(protocol=protocol, **options),
    "edge": lambda spec, protocol, **options: EdgeMeter(protocol=protocol, **options),
    "sal": lambda spec, protocol, **options: SaliencyMeter(protocol=protocol, **options),
    "scene": lambda spec, protocol, **options: SceneMeter(protocol=protocol, **options),
    "detection": lambda spec, protocol, **options: DetectionMeter(
        spec.channels, class_names=spec.classes or None, protocol=protocol, **options),
    # human parts are a segmentation of their own label map: the same mIoU, on batch["human_parts"]
    "human_parts": lambda spec, protocol, **options: _semseg_meter(spec, protocol, key="human_parts",
                                                                   **options),
}


def metric_names(spec: TaskSpec, protocol: str = "default") -> tuple[str, ...]:
    """The keys of `make_meter(spec, protocol).compute()`: `spec.metrics`, then the official extras."""
    extra = OFFICIAL_EXTRA_METRICS.get(spec.name, {}) if _check_protocol(protocol) == "official" else {}
    return tuple(spec.metrics) + tuple(extra)


def metric_directions(spec: TaskSpec) -> dict[str, bool]:
    """{metric: higher_is_better} for every metric any protocol reports for the task."""
    return dict(spec.higher_is_better) | OFFICIAL_EXTRA_METRICS.get(spec.name, {})


def primary_metrics(tasks: Mapping[str, TaskSpec], protocol: str = "default") -> dict[str, list[str]]:
    """{task: [metric]}, the one metric per task of Δm: the spec's `primary`, or under the official
    protocol MTI-Net's (`OFFICIAL_PRIMARY`; tasks it does not evaluate keep their `primary`).
    Pass it as `metrics=` to `delta_m` or `experiments.delta_m_table`."""
    official = _check_protocol(protocol) == "official"
    return {name: [OFFICIAL_PRIMARY.get(name, spec.primary) if official else spec.primary]
            for name, spec in tasks.items()}


def make_meter(spec: TaskSpec, protocol: str = "default", **options) -> Meter:
    """The meter for a task spec; its compute() keys are `metric_names(spec, protocol)` (exactly
    `spec.metrics` under the default protocol). `options` go to the meter's constructor, e.g.
    `max_dist=0.011` or `matching="bsds"` for edges."""
    if spec.name not in _METERS:
        raise ValueError(f"task {spec.name!r}: no meter; known: {list(_METERS)}")
    return _METERS[spec.name](spec, _check_protocol(protocol), **options)


class MetricSuite:
    """One meter per task. `update(outputs, batch)` evaluates the tasks that the model output
    predicts (an auxiliary task supervised only through out["deep"] has no final prediction and
    is skipped); `compute()` returns {task: {metric: value}} for the tasks that were evaluated.

    `protocol`: "default" or "official" (module docstring); `options`: {task: {argument: value}}
    for a meter's constructor, e.g. {"edge": {"max_dist": 0.011}}."""

    def __init__(self, tasks: Mapping[str, TaskSpec], protocol: str = "default",
                 options: Mapping[str, Mapping] | None = None):
        self.tasks = dict(tasks)
        self.protocol = _check_protocol(protocol)
        options = dict(options or {})
        unknown = set(options) - set(self.tasks)
        if unknown:
            raise ValueError(f"options: tasks {sorted(unknown)} are not among {list(self.tasks)}")
        self.meters = {name: make_meter(spec, protocol, **options.get(name, {}))
                       for name, spec in self.tasks.items()}
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
            metrics: Mapping[str, Sequence[str]] | None = None, protocol: str = "default") -> float:
    """Multi-task performance Δm in % (Maninis et al. 2019; MTI-Net; LibMTL):

        Δm = (1/T) Σ_t  mean_{m in metrics of t}  (−1)^{l_m} (M_{t,m} − B_{t,m}) / B_{t,m} × 100,

    l_m = 1 when lower is better, so Δm > 0 means better than the single-task baselines. A task
    with several metrics is averaged over its metrics first (LibMTL), so each task weighs 1/T
    whatever its number of metrics.

    results / baselines: {task: {metric: value}}. tasks_or_directions: {task: TaskSpec} or
    {task: {metric: higher_is_better}}; its tasks are the T tasks. metrics: optional
    {task: [metric names]}; by default every metric of the task (the spec's `metrics`, or the
    direction dict's keys) present in both results and baselines.

    protocol="official": tasks without an entry in `metrics` use MTI-Net's single metric
    (`OFFICIAL_PRIMARY`, which must then be in both results and baselines), so that Δm is
    `calculate_multi_task_performance` (evaluation/evaluate_utils.py) in %: the mean over tasks
    of the signed relative change of semseg / human-parts / saliency mIoU, depth RMSE, normals
    mean angle and edge odsF. Tasks MTI-Net does not evaluate keep the default choice.
    """
    metrics = dict(metrics or {})
    if _check_protocol(protocol) == "official":
        for task in tasks_or_directions:
            if task not in metrics and task in OFFICIAL_PRIMARY:
                metrics[task] = [OFFICIAL_PRIMARY[task]]
    extra = set(metrics) - set(tasks_or_directions)
    if extra:
        raise ValueError(f"metrics: tasks {sorted(extra)} are not among {list(tasks_or_directions)}")
    if not tasks_or_directions:
        raise ValueError("delta_m: no tasks")
    per_task = []
    for task, spec in tasks_or_directions.items():
        if isinstance(spec, TaskSpec):
            directions, names = metric_directions(spec), spec.metrics
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
