"""SSD pieces (Liu et al., ECCV 2016): default boxes, box coding, matching, the multibox loss, NMS, the head.

Coordinates used in this module:
- *priors* (default boxes) are (P, 4) ``(cx, cy, w, h)`` normalised by the image width / height;
- ground truth enters :func:`match` as (N, 4) ``(x1, y1, x2, y2)`` normalised the same way (the batch
  dict holds pixels: :func:`multibox_loss` divides by the image size);
- the network predicts per prior the class logits (C + 1, index 0 = background) and 4 offsets
  ("deltas") relative to the prior, SSD's encoding with variances (0.1, 0.2) (:func:`encode`);
- :func:`postprocess` returns pixel ``xyxy`` boxes and 0-based class labels, like the batch dict.

Prior order (must match :class:`SSDHead`'s flattening): level by level, within a level row by row
(y, then x), and at each location the boxes of :meth:`PriorBoxes.shapes` in order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_convert, box_iou

Tensor = torch.Tensor

VARIANCES = (0.1, 0.2)
BBOX_CLIP = math.log(1000.0 / 16)  # largest log-scale of a decoded box (as torchvision): no exp overflow


# ----------------------------------------------------------------------------------------------- priors
# ROCK's reference default boxes (rock-pytorch, rock/ssd/prior_boxes.py, pboxes_rock: NVIDIA's SSD300
# scales on NYUv2's 480x640 images): sk = [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05] for 6 levels
# (30x40 ... 1x1) and aspect ratios [[2], [2, 3], [2, 3], [2, 3], [2], [2]] (4 or 6 boxes per location).
ROCK_FIRST_SCALE, ROCK_MIN_SCALE, ROCK_MAX_SCALE = 0.07, 0.15, 0.87
ROCK_ASPECT_RATIOS = ((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,))
ROCK_EXTRA_LAYERS = 5  # 6 levels: the base map and 5 extra layers (rock/model/detection.py, Detection)


class PriorBoxes:
    """SSD default boxes for a list of feature-map sizes, computed for the actual image size.

    Scales: the m levels used get s_0 ... s_{m-1}, plus s_m for the extra square box of the last level.
    With `first_scale` (SSD300's special conv4_3 scale, ROCK's reference 0.07) s_0 = first_scale and
    the other levels are linear from `min_scale` to `max_scale`; without it all m levels are linear
    (SSD's rule). s_m continues the linear rule (the reference's 1.05; SSD's paper uses 1). With the
    defaults and 6 levels this is the reference's sk = [0.07, 0.15, 0.33, ..., 0.87, 1.05]; with fewer
    levels the same range is spread over the levels there are.

    At every location of level k there are boxes of scale s_k with aspect ratios 1, a and 1/a for each
    a in the level's ratios, plus a square box of scale sqrt(s_k * s_{k+1}): 2 + 2 * len(ratios) boxes.
    `aspect_ratios` is either one tuple for every level or a tuple per level (ROCK's reference:
    {2} on the first and the last two levels, {2, 3} in between); levels beyond it repeat its last entry.

    A box of scale s and aspect ratio a is s * sqrt(a) wide and s / sqrt(a) high in units of the
    image's *shorter side*, so square priors are square in pixels on non-square images too (on a
    square image this is exactly SSD's rule; the reference scales width and height separately). Centres
    sit at the cell centres ((j + 0.5) / w_k, (i + 0.5) / h_k). With `clip=True` (default, as SSD and
    the reference) every value (cx, cy, w, h) is clamped to [0, 1]; the box itself may still reach
    beyond the image border.
    """

    def __init__(self, first_scale: float | None = ROCK_FIRST_SCALE, min_scale: float = ROCK_MIN_SCALE,
                 max_scale: float = ROCK_MAX_SCALE,
                 aspect_ratios: Sequence[float] | Sequence[Sequence[float]] = ROCK_ASPECT_RATIOS,
                 clip: bool = True):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"min_scale={min_scale}, max_scale={max_scale}: need 0 < min_scale <= max_scale")
        if first_scale is not None and not 0 < first_scale:
            raise ValueError(f"first_scale={first_scale}: must be positive (or None: no special first level)")
        flat = all(isinstance(r, Real) for r in aspect_ratios)  # one tuple of numbers: every level
        per_level = [tuple(aspect_ratios)] if flat else [tuple(r) for r in aspect_ratios]
        if not per_level or any(a <= 0 for r in per_level for a in r):
            raise ValueError(f"aspect_ratios={aspect_ratios}: positive ratios, for all levels or per level")
        self.first_scale = None if first_scale is None else float(first_scale)
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.aspect_ratios = [tuple(float(a) for a in r) for r in per_level]
        self.clip = clip
        self._cache: dict = {}

    def level_ratios(self, level: int) -> tuple[float, ...]:
        """The aspect ratios a (besides 1) of `level`; levels past the list repeat its last entry."""
        return self.aspect_ratios[min(level, len(self.aspect_ratios) - 1)]

    def num_per_location(self, level: int) -> int:
        return 2 + 2 * len(self.level_ratios(level))

    def scales(self, num_levels: int) -> list[float]:
        """s_0 ... s_{m-1} of `num_levels` = m levels, plus s_m (used only for the extra square box)."""
        linear = num_levels - (self.first_scale is not None)
        if linear <= 1:
            lin = [self.min_scale, self.max_scale][:linear + 1]
        else:
            step = (self.max_scale - self.min_scale) / (linear - 1)
            lin = [self.min_scale + step * k for k in range(linear + 1)]
        return ([self.first_scale] if self.first_scale is not None else []) + lin

    def shapes(self, level: int, num_levels: int) -> list[tuple[float, float]]:
        """(scale-width, scale-height) of the boxes at one location of `level`, in shorter-side units."""
        s = self.scales(num_levels)
        sk, extra = s[level], math.sqrt(s[level] * s[level + 1])
        shapes = [(sk, sk), (extra, extra)]
        for a in self.level_ratios(level):
            r = math.sqrt(a)
            shapes += [(sk * r, sk / r), (sk / r, sk * r)]
        return shapes

    def __call__(self, feature_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int],
                 device: torch.device | str = "cpu") -> Tensor:
        """(P, 4) priors (cx, cy, w, h) for maps of `feature_sizes` [(h, w), ...] on an image (H, W)."""
        key = (tuple((int(h), int(w)) for h, w in feature_sizes), (int(image_size[0]), int(image_size[1])),
               str(device))
        if key not in self._cache:
            self._cache[key] = self._compute(*key[:2]).to(device)
        return self._cache[key]

    def _compute(self, feature_sizes, image_size) -> Tensor:
        img_h, img_w = image_size
        short = min(img_h, img_w)
        levels = []
        for k, (fh, fw) in enumerate(feature_sizes):
            cy, cx = torch.meshgrid((torch.arange(fh, dtype=torch.float32) + 0.5) / fh,
                                    (torch.arange(fw, dtype=torch.float32) + 0.5) / fw, indexing="ij")
            wh = torch.tensor([(sw * short / img_w, sh * short / img_h)
                               for sw, sh in self.shapes(k, len(feature_sizes))])  # (A, 2)
            centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2).expand(-1, len(wh), 2)  # (h*w, A, 2)
            levels.append(torch.cat([centres, wh.expand_as(centres)], dim=-1).reshape(-1, 4))
        priors = torch.cat(levels)
        return priors.clamp(0, 1) if self.clip else priors

    def count(self, feature_sizes: Sequence[tuple[int, int]]) -> int:
        """Number of priors: sum over levels of h * w * the level's boxes per location."""
        return sum(h * w * self.num_per_location(k) for k, (h, w) in enumerate(feature_sizes))


# ------------------------------------------------------------------------------------------ box coding
def encode(gt_boxes: Tensor, priors: Tensor, variances: tuple[float, float] = VARIANCES) -> Tensor:
    """SSD offsets of (..., 4) normalised xyxy boxes w.r.t. (..., 4) (cx, cy, w, h) priors.

    d_xy = (c_gt - c_prior) / (v0 * wh_prior),  d_wh = log(wh_gt / wh_prior) / v1.
    Degenerate (zero-size) boxes are given a size of 1e-6 so the log stays finite.
    """
    gt = box_convert(gt_boxes, "xyxy", "cxcywh")
    d_xy = (gt[..., :2] - priors[..., :2]) / (variances[0] * priors[..., 2:])
    d_wh = torch.log(gt[..., 2:].clamp_min(1e-6) / priors[..., 2:]) / variances[1]
    return torch.cat([d_xy, d_wh], dim=-1)


def decode(deltas: Tensor, priors: Tensor, variances: tuple[float, float] = VARIANCES) -> Tensor:
    """Inverse of :func:`encode`: (..., 4) offsets + priors -> normalised xyxy boxes (not clipped)."""
    xy = priors[..., :2] + deltas[..., :2] * variances[0] * priors[..., 2:]
    wh = priors[..., 2:] * torch.exp((deltas[..., 2:] * variances[1]).clamp(max=BBOX_CLIP))
    return box_convert(torch.cat([xy, wh], dim=-1), "cxcywh", "xyxy")


# ---------------------------------------------------------------------------------------------- matching
def match(gt_boxes: Tensor, gt_labels: Tensor, priors: Tensor, pos_iou: float = 0.5, neg_iou: float = 0.4,
          variances: tuple[float, float] = VARIANCES) -> tuple[Tensor, Tensor]:
    """Assign every prior a training target.

    Args: `gt_boxes` (N, 4) normalised xyxy, `gt_labels` (N,) 0-based classes, `priors` (P, 4) cxcywh.
    Returns `labels` (P,) int64 -- 0 background, k + 1 for class k, -1 ignored (IoU in [neg_iou, pos_iou),
    not used by the loss) -- and `box_targets` (P, 4), the encoded offsets of each prior's best GT
    (meaningful only where labels > 0).

    Rules: a prior whose best IoU with a GT is >= pos_iou is positive for that GT, < neg_iou negative.
    Then every GT additionally claims its best prior (forced positive, whatever the IoU) so that no GT
    goes unmatched; GTs are served one after another and a prior already claimed by an earlier GT is
    not taken again (so two GTs sharing a best prior both still get one, as long as N <= P).
    (ROCK's reference, rock/ssd/encoder.py, Encoder.encode, needs IoU > pos_iou strictly: only an IoU
    of exactly pos_iou differs.)
    """
    num_priors = priors.shape[0]
    labels = torch.zeros(num_priors, dtype=torch.int64, device=priors.device)
    if gt_boxes.numel() == 0:
        return labels, torch.zeros_like(priors)
    iou = box_iou(gt_boxes.to(priors.dtype), box_convert(priors, "cxcywh", "xyxy"))  # (N, P)
    best_iou, best_gt = iou.max(dim=0)  # per prior

    claimed = torch.zeros(num_priors, dtype=torch.bool, device=priors.device)
    for j in range(gt_boxes.shape[0]):
        prior = iou[j].masked_fill(claimed, -1.0).argmax() if not claimed.all() else iou[j].argmax()
        claimed[prior] = True
        best_gt[prior], best_iou[prior] = j, 2.0  # 2 > any IoU: always positive

    labels = gt_labels.to(torch.int64)[best_gt] + 1
    labels[best_iou < pos_iou] = -1
    labels[best_iou < neg_iou] = 0
    return labels, encode(gt_boxes.to(priors.dtype)[best_gt], priors, variances)


def match_batch(batch: dict, priors: Tensor, image_size: tuple[int, int],
                **match_options) -> tuple[Tensor, Tensor]:
    """:func:`match` for every image of a batch dict (pixel boxes): (B, P) labels and (B, P, 4) targets."""
    h, w = image_size
    scale = torch.tensor([w, h, w, h], dtype=priors.dtype, device=priors.device)
    labels, targets = [], []
    for boxes, classes in zip(batch["boxes"], batch["labels"], strict=True):
        boxes = boxes.to(priors.device, priors.dtype).reshape(-1, 4) / scale
        lab, tgt = match(boxes, classes.to(priors.device), priors, **match_options)
        labels.append(lab)
        targets.append(tgt)
    return torch.stack(labels), torch.stack(targets)


# ------------------------------------------------------------------------------------------------- loss
# rock-pytorch: rock/model/losses.py, DetectionLoss._hard_neg_mining_conf_loss (the SSD rule).
def hard_negative_mining(neg_loss: Tensor, positive: Tensor, negative: Tensor,
                         neg_pos_ratio: int = 3) -> Tensor:
    """(B, P) bool mask of the negatives kept for the classification loss.

    Per image, the min(neg_pos_ratio * num_pos, num_neg) negatives with the highest `neg_loss`
    (the background cross-entropy). An image without any positive keeps none, as in ROCK's reference.
    """
    num_neg = torch.minimum(neg_pos_ratio * positive.sum(dim=1), negative.sum(dim=1))
    ranked = neg_loss.detach().masked_fill(~negative, float("-inf"))
    rank = ranked.argsort(dim=1, descending=True).argsort(dim=1)  # 0 = hardest
    return (rank < num_neg[:, None]) & negative


LOC_WEIGHT = 6.0  # ROCK's reference (DetectionLoss.loc_weight); its README: raised from the paper's 3


# rock-pytorch: rock/model/losses.py, DetectionLoss.forward (with _loc_loss and
# _hard_neg_mining_conf_loss), itself after NVIDIA's SSD (DeepLearningExamples).
def multibox_loss(pred: dict, batch: dict, neg_pos_ratio: int = 3, loc_weight: float = LOC_WEIGHT,
                  pos_iou: float = 0.5, neg_iou: float = 0.4) -> Tensor:
    """SSD's loss as ROCK's reference computes it: per image i with n_i > 0 positive priors,

        L_i = (loc_weight * sum_pos SmoothL1(offsets) + sum_{pos + mined neg} CE) / n_i,

    SmoothL1 with threshold 1 summed over the 4 offsets, the negatives mined by
    :func:`hard_negative_mining`; L_i = 0 for an image without positives (none of its negatives count).
    The loss is the mean of L_i over all B images, those without positives included: a batch without
    any box gives exactly 0 (and a zero gradient).

    `pred` is the model's out["detection"] (logits (B, P, C + 1), deltas (B, P, 4), priors (P, 4),
    image_size (H, W); without image_size the size of batch["image"] is used).
    """
    logits, deltas, priors = pred["logits"].float(), pred["deltas"].float(), pred["priors"].float()
    image_size = pred.get("image_size") or tuple(batch["image"].shape[-2:])
    with torch.no_grad():
        labels, targets = match_batch(batch, priors, image_size, pos_iou=pos_iou, neg_iou=neg_iou)
    positive, negative = labels > 0, labels == 0

    box_loss = F.smooth_l1_loss(deltas, targets, reduction="none").sum(dim=-1)  # (B, P)
    ce = F.cross_entropy(logits.flatten(0, 1), labels.clamp_min(0).flatten(), reduction="none")
    ce = ce.view_as(labels)
    mined = hard_negative_mining(ce, positive, negative, neg_pos_ratio)
    loc_loss = torch.where(positive, box_loss, 0.0).sum(dim=1)
    cls_loss = torch.where(positive | mined, ce, 0.0).sum(dim=1)
    num_pos = positive.sum(dim=1)
    per_image = (loc_weight * loc_loss + cls_loss) / num_pos.clamp_min(1)
    return torch.where(num_pos > 0, per_image, 0.0).mean()


# ------------------------------------------------------------------------------------------ inference
@torch.no_grad()
def postprocess(det_out: dict, image_size: tuple[int, int] | None = None, score_thresh: float = 0.01,
                nms_iou: float = 0.45, max_detections: int = 100, top_k_per_class: int = 200) -> list[dict]:
    """Detections per image: [{"boxes": (K, 4) xyxy pixels, "scores": (K,), "labels": (K,) 0-based}].

    Softmax scores; per class the `top_k_per_class` best priors above `score_thresh` (SSD keeps 200)
    are decoded, clipped to the image, suppressed per class with `torchvision.ops.batched_nms`, and
    the `max_detections` best remain, sorted by decreasing score. `image_size` (H, W) defaults to
    det_out["image_size"].
    """
    image_size = image_size or det_out.get("image_size")
    if image_size is None:
        raise ValueError("postprocess: image_size (H, W) is needed (not given and not in det_out)")
    h, w = int(image_size[0]), int(image_size[1])
    scores_all = det_out["logits"].float().softmax(dim=-1)[..., 1:]  # (B, P, C): drop background
    boxes_all = decode(det_out["deltas"].float(), det_out["priors"].float()).clamp(0, 1)
    boxes_all = boxes_all * boxes_all.new_tensor([w, h, w, h])
    num_priors, num_classes = scores_all.shape[1:]
    results = []
    for scores, boxes in zip(scores_all, boxes_all, strict=True):
        top_scores, top_idx = scores.topk(min(top_k_per_class, num_priors), dim=0)  # (k, C)
        classes = torch.arange(num_classes, device=scores.device).expand_as(top_idx)
        keep = top_scores > score_thresh
        s, c, b = top_scores[keep], classes[keep], boxes[top_idx[keep]]
        kept = batched_nms(b, s, c, nms_iou)[:max_detections]
        results.append({"boxes": b[kept], "scores": s[kept], "labels": c[kept]})
    return results


# ------------------------------------------------------------------------------------------------ head
def feature_sizes(base_size: tuple[int, int], extra_layers: int) -> list[tuple[int, int]]:
    """The maps an :class:`SSDHead` predicts from for a base map of `base_size` (h, w): the base map,
    then each extra layer's stride-2 3x3 convolution (padding 1: ceil(n / 2)) until a 1x1 map or no
    layer is left."""
    sizes = [(int(base_size[0]), int(base_size[1]))]
    for _ in range(extra_layers):
        if sizes[-1] == (1, 1):
            break
        sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
    return sizes


class SSDHead(nn.Module):
    """Extra down-sampling layers after the base map + per level a 3x3 conv for class logits and one
    for box offsets; returns the out["detection"] dict of the output contract.

    The defaults are ROCK's reference detector (rock-pytorch, rock/model/detection.py and
    rock/ssd/prior_boxes.py): 5 extra layers (6 levels), 4 or 6 boxes per location, scales 0.07 ... 1.05
    (see :class:`PriorBoxes`; `first_scale`, `min_scale`, `max_scale`, `aspect_ratios` are its options).
    Extra layer i: 1x1 conv to c_i / 2, BN, ReLU, 3x3 stride-2 conv to c_i, BN, ReLU (SSD / ROCK; the
    reference's last two take its 4x5 map to 2x3 and 1x1 with an unpadded 3x3 and a (2, 3) kernel,
    sizes of NYUv2's images; stride 2 with padding 1 reaches 1x1 from any size). Widths
    `extra_channels` default to min(512, in_channels) for the first and 256 for the others. The pyramid
    stops at a 1x1 map: a 4x4 base map uses 4x4 -> 2x2 -> 1x1 whatever the number of extra layers; the
    unused layers take no part (and get no gradient) at that size, and the scales are spread over the
    levels actually used.

    The class logits start at a foreground probability of `foreground_prior` = 0.01 per class (the
    reference's _init_bias, after RetinaNet, Lin et al. 2017): the background dominates from the first
    step. None keeps PyTorch's default initialisation of the biases.
    """

    def __init__(self, in_channels: int, num_classes: int, extra_layers: int = ROCK_EXTRA_LAYERS,
                 extra_channels: Sequence[int] | None = None, first_scale: float | None = ROCK_FIRST_SCALE,
                 min_scale: float = ROCK_MIN_SCALE, max_scale: float = ROCK_MAX_SCALE,
                 aspect_ratios: Sequence[float] | Sequence[Sequence[float]] = ROCK_ASPECT_RATIOS,
                 foreground_prior: float | None = 0.01):
        super().__init__()
        if extra_channels is None:
            extra_channels = [min(512, in_channels)] + [256] * (extra_layers - 1)
        extra_channels = list(extra_channels)[:extra_layers]
        if len(extra_channels) != extra_layers:
            raise ValueError(f"extra_channels={extra_channels}: need one width per extra layer "
                             f"({extra_layers})")
        self.num_classes, self.extra_layers = num_classes, extra_layers
        self.priors = PriorBoxes(first_scale, min_scale, max_scale, aspect_ratios)
        self.extras = nn.ModuleList()
        cin = in_channels
        for cout in extra_channels:
            mid = max(cout // 2, 1)
            self.extras.append(nn.Sequential(
                nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                nn.Conv2d(mid, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True)))
            cin = cout
        level_channels = [in_channels, *extra_channels]
        anchors = [self.priors.num_per_location(k) for k in range(len(level_channels))]
        self.cls_convs = nn.ModuleList(nn.Conv2d(c, a * (num_classes + 1), 3, padding=1)
                                       for c, a in zip(level_channels, anchors, strict=True))
        self.box_convs = nn.ModuleList(nn.Conv2d(c, a * 4, 3, padding=1)
                                       for c, a in zip(level_channels, anchors, strict=True))
        if foreground_prior is not None:
            foreground_bias = math.log(foreground_prior / (1 - foreground_prior))
            with torch.no_grad():  # biases (A, K) per location: background 0, every class log(p / (1 - p))
                for conv, a in zip(self.cls_convs, anchors, strict=True):
                    conv.bias.view(a, num_classes + 1)[:, 0] = 0.0
                    conv.bias.view(a, num_classes + 1)[:, 1:] = foreground_bias

    def levels(self, base: Tensor) -> list[Tensor]:
        """The feature maps the head predicts from: the base map, then extra layers down to 1x1."""
        maps = [base]
        for layer in self.extras:
            if maps[-1].shape[-2:] == (1, 1):
                break
            maps.append(layer(maps[-1]))
        return maps

    def default_boxes(self, base_size: tuple[int, int], image_size: tuple[int, int],
                      device: torch.device | str = "cpu") -> tuple[list[tuple[int, int]], Tensor]:
        """The map sizes and the (P, 4) priors this head uses for a base map of `base_size` on an image of
        `image_size`, without running it (what :func:`detection_study.prior_coverage` measures)."""
        sizes = feature_sizes(base_size, self.extra_layers)
        return sizes, self.priors(sizes, image_size, device)

    def forward(self, base: Tensor, image_size: tuple[int, int]) -> dict:
        maps = self.levels(base)
        logits, deltas = [], []
        for x, cls_conv, box_conv in zip(maps, self.cls_convs, self.box_convs, strict=False):
            b = x.shape[0]
            # (B, A*K, h, w) -> (B, h, w, A*K) -> (B, h*w*A, K): the prior order of PriorBoxes
            logits.append(cls_conv(x).permute(0, 2, 3, 1).reshape(b, -1, self.num_classes + 1))
            deltas.append(box_conv(x).permute(0, 2, 3, 1).reshape(b, -1, 4))
        sizes = [tuple(x.shape[-2:]) for x in maps]
        image_size = (int(image_size[0]), int(image_size[1]))
        return {"logits": torch.cat(logits, dim=1), "deltas": torch.cat(deltas, dim=1),
                "priors": self.priors(sizes, image_size, base.device), "image_size": image_size,
                "feature_sizes": sizes}
