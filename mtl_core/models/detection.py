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

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_convert, box_iou

Tensor = torch.Tensor

VARIANCES = (0.1, 0.2)
BBOX_CLIP = math.log(1000.0 / 16)  # largest log-scale of a decoded box (as torchvision): no exp overflow


# ----------------------------------------------------------------------------------------------- priors
class PriorBoxes:
    """SSD default boxes for a list of feature-map sizes, computed for the actual image size.

    Level k of m gets the scale s_k = min_scale + (max_scale - min_scale) * k / (m - 1) (SSD's linear
    rule; s_0 = min_scale when m == 1) and s_m = 1. At every location of level k there are boxes of
    scale s_k with aspect ratios 1, a and 1/a for each a in `aspect_ratios` (default {1, 2, 1/2}),
    plus a square box of scale sqrt(s_k * s_{k+1}): 2 + 2 * len(aspect_ratios) boxes per location.

    A box of scale s and aspect ratio a is s * sqrt(a) wide and s / sqrt(a) high in units of the
    image's *shorter side*, so square priors are square in pixels on non-square images too (on a
    square image this is exactly SSD's rule). Centres sit at the cell centres ((j + 0.5) / w_k,
    (i + 0.5) / h_k). With `clip=True` (default, as SSD) every value (cx, cy, w, h) is clamped to
    [0, 1]; the box itself may still reach beyond the image border, as in SSD.
    """

    def __init__(self, min_scale: float = 0.2, max_scale: float = 0.9,
                 aspect_ratios: Sequence[float] = (2.0,), clip: bool = True):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"min_scale={min_scale}, max_scale={max_scale}: need 0 < min_scale <= max_scale")
        if any(a <= 0 for a in aspect_ratios):
            raise ValueError(f"aspect_ratios={tuple(aspect_ratios)}: ratios must be positive")
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.aspect_ratios = tuple(float(a) for a in aspect_ratios)
        self.clip = clip
        self._cache: dict = {}

    @property
    def num_per_location(self) -> int:
        return 2 + 2 * len(self.aspect_ratios)

    def scales(self, num_levels: int) -> list[float]:
        """s_0 ... s_{m-1} by the linear rule, plus s_m = 1 (used only for the extra square box)."""
        if num_levels == 1:
            return [self.min_scale, 1.0]
        step = (self.max_scale - self.min_scale) / (num_levels - 1)
        return [self.min_scale + step * k for k in range(num_levels)] + [1.0]

    def shapes(self, level: int, num_levels: int) -> list[tuple[float, float]]:
        """(scale-width, scale-height) of the boxes at one location of `level`, in shorter-side units."""
        s = self.scales(num_levels)
        sk, extra = s[level], math.sqrt(s[level] * s[level + 1])
        shapes = [(sk, sk), (extra, extra)]
        for a in self.aspect_ratios:
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

    @staticmethod
    def count(feature_sizes: Sequence[tuple[int, int]], num_per_location: int = 4) -> int:
        """Number of priors: sum over levels of h * w * boxes per location."""
        return sum(h * w for h, w in feature_sizes) * num_per_location


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
def hard_negative_mining(neg_loss: Tensor, positive: Tensor, negative: Tensor,
                         neg_pos_ratio: int = 3) -> Tensor:
    """(B, P) bool mask of the negatives kept for the classification loss.

    Per image, the min(neg_pos_ratio * num_pos, num_neg) negatives with the highest `neg_loss`
    (the background cross-entropy). An image without any positive mines as if it had one, i.e. it
    contributes its `neg_pos_ratio` hardest negatives: it still teaches "nothing here" without
    flooding the loss with easy background.
    """
    num_pos = positive.sum(dim=1).clamp_min(1)
    num_neg = torch.minimum(neg_pos_ratio * num_pos, negative.sum(dim=1))
    ranked = neg_loss.detach().masked_fill(~negative, float("-inf"))
    rank = ranked.argsort(dim=1, descending=True).argsort(dim=1)  # 0 = hardest
    return (rank < num_neg[:, None]) & negative


def multibox_loss(pred: dict, batch: dict, neg_pos_ratio: int = 3, pos_iou: float = 0.5,
                  neg_iou: float = 0.4) -> Tensor:
    """SSD's loss: (Smooth-L1 on positives' offsets + cross-entropy on positives and mined negatives) / N_pos.

    `pred` is the model's out["detection"] (logits (B, P, C + 1), deltas (B, P, 4), priors (P, 4),
    image_size (H, W); without image_size the size of batch["image"] is used). N_pos counts the
    positive priors of the whole batch, clamped to >= 1, so a batch without boxes gives a finite loss
    made of its images' hardest negatives only (see :func:`hard_negative_mining`).
    """
    logits, deltas, priors = pred["logits"].float(), pred["deltas"].float(), pred["priors"].float()
    image_size = pred.get("image_size") or tuple(batch["image"].shape[-2:])
    with torch.no_grad():
        labels, targets = match_batch(batch, priors, image_size, pos_iou=pos_iou, neg_iou=neg_iou)
    positive, negative = labels > 0, labels == 0

    box_loss = F.smooth_l1_loss(deltas[positive], targets[positive], reduction="sum")
    ce = F.cross_entropy(logits.flatten(0, 1), labels.clamp_min(0).flatten(), reduction="none")
    ce = ce.view_as(labels)
    mined = hard_negative_mining(ce, positive, negative, neg_pos_ratio)
    cls_loss = ce[positive | mined].sum()
    return (box_loss + cls_loss) / positive.sum().clamp_min(1)


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
class SSDHead(nn.Module):
    """Extra down-sampling layers after the base map + per level a 3x3 conv for class logits and one
    for box offsets; returns the out["detection"] dict of the output contract.

    Extra layer i: 1x1 conv to c_i / 2, BN, ReLU, 3x3 stride-2 conv to c_i, BN, ReLU (SSD / ROCK).
    Widths `extra_channels` default to min(512, in_channels) for the first and 256 for the others.
    The pyramid stops at a 1x1 map: a 64x64 image with a stride-16 base map uses 4x4 -> 2x2 -> 1x1
    even with 3 extra layers; the unused layers then take no part (and get no gradient) at that size.
    Prior scales follow the levels actually used (see :class:`PriorBoxes`).
    """

    def __init__(self, in_channels: int, num_classes: int, extra_layers: int = 3,
                 extra_channels: Sequence[int] | None = None, min_scale: float = 0.2, max_scale: float = 0.9,
                 aspect_ratios: Sequence[float] = (2.0,)):
        super().__init__()
        if extra_channels is None:
            extra_channels = [min(512, in_channels)] + [256] * (extra_layers - 1)
        extra_channels = list(extra_channels)[:extra_layers]
        if len(extra_channels) != extra_layers:
            raise ValueError(f"extra_channels={extra_channels}: need one width per extra layer "
                             f"({extra_layers})")
        self.num_classes = num_classes
        self.priors = PriorBoxes(min_scale, max_scale, aspect_ratios)
        anchors = self.priors.num_per_location
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
        self.cls_convs = nn.ModuleList(nn.Conv2d(c, anchors * (num_classes + 1), 3, padding=1)
                                       for c in level_channels)
        self.box_convs = nn.ModuleList(nn.Conv2d(c, anchors * 4, 3, padding=1) for c in level_channels)

    def levels(self, base: Tensor) -> list[Tensor]:
        """The feature maps the head predicts from: the base map, then extra layers down to 1x1."""
        maps = [base]
        for layer in self.extras:
            if maps[-1].shape[-2:] == (1, 1):
                break
            maps.append(layer(maps[-1]))
        return maps

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
