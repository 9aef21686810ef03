"""The detection side of the suite (notebook 04, ROCK): tables, figures and checks for detectors.

    coverage = prior_coverage(gt_boxes(val_set), (64, 64), strides=(32, 16))  # can SSD's priors fit?
    table = map_table(results)                      # mAP@0.5 / mAP@[.5:.95], mean and std over seeds
    map_bars(table, "SSD vs ROCK", save_to=...)
    per_class = per_class_ap({"SSD": ssd_runs, "ROCK": rock_runs})
    detection_gallery(val_set, {"SSD": predict(ssd, val_set, idx), ...}, idx, save_to=...)
    ranking_verdict(table, ["ROCK", "flat MTL", "SSD"])   # the conclusion, computed from the numbers

`results` are what `experiments.run_variants` returns: {label: [RunResult per seed]}.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from torchvision.ops import box_convert, box_iou

from .data import collate_batch
from .experiments import metrics_table
from .metrics import DetectionMeter
from .models.detection import PriorBoxes, postprocess
from .plots import draw_boxes, save_figure
from .runs import RunResult
from .train import autocast_dtype, make_dataset

# the detection metrics as the store names them -> as the papers print them
MAP_NAMES = {"detection/map50": "mAP@0.5", "detection/map": "mAP@[.5:.95]"}



# ------------------------------------------------------------------ can the priors fit the objects?


def ssd_feature_sizes(image_size: tuple[int, int], stride: int,
                      extra_layers: int = 3) -> list[tuple[int, int]]:
    """The maps an SSDHead predicts from for a base map of `stride`: the base map, then each extra
    layer's stride-2 3x3 convolution (padding 1: ceil(n / 2)) until a 1x1 map or no layer is left."""
    h, w = math.ceil(image_size[0] / stride), math.ceil(image_size[1] / stride)
    sizes = [(h, w)]
    for _ in range(extra_layers):
        if sizes[-1] == (1, 1):
            break
        sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
    return sizes


def gt_boxes(dataset, max_samples: int | None = None) -> torch.Tensor:
    """All ground-truth boxes (N, 4) xyxy pixels of the first `max_samples` items of a dataset."""
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    raw = getattr(dataset, "raw", None)  # the synthetic cache: no need to build every item's tensors
    boxes = [np.asarray((raw(i) if raw else dataset[i])["boxes"], dtype=np.float32).reshape(-1, 4)
             for i in range(n)]
    return torch.from_numpy(np.concatenate(boxes)) if boxes else torch.zeros(0, 4)


def prior_coverage(boxes: torch.Tensor, image_size: tuple[int, int], strides: Sequence[int] = (32, 16),
                   iou: float = 0.5, extra_layers: int = 3, **prior_options) -> pd.DataFrame:
    """How well SSD's default boxes can match the objects, before any training, per base-map stride.

    A prior whose IoU with an object reaches `iou` is a positive the classifier can learn from
    (detection.match); below it the object only gets its single best prior, forced, and the box
    regression must do all the work. Columns: the SSD maps, the number of priors, the median best
    IoU of an object with any prior, the share of objects with a prior at IoU >= `iou`, and the
    mean number of such priors per object."""
    h, w = image_size
    normalised = boxes.float().reshape(-1, 4) / torch.tensor([w, h, w, h], dtype=torch.float32)
    rows = {}
    for stride in strides:
        sizes = ssd_feature_sizes(image_size, stride, extra_layers)
        priors = PriorBoxes(**prior_options)(sizes, image_size)
        overlap = box_iou(normalised, box_convert(priors, "cxcywh", "xyxy"))  # (objects, priors)
        if len(normalised):
            best = overlap.max(dim=1).values
            stats = (float(best.median()), float((best >= iou).float().mean()),
                     float((overlap >= iou).sum(1).float().mean()))
        else:  # no object: nothing to cover
            stats = (math.nan,) * 3
        rows[f"1/{stride}"] = {"SSD maps": " → ".join(f"{a}×{b}" for a, b in sizes), "priors": len(priors),
                               "median best IoU": stats[0], f"objects with a prior ≥ {iou:g}": stats[1],
                               f"priors ≥ {iou:g} per object": stats[2]}
    return pd.DataFrame(rows).T


# ------------------------------------------------------------------ the ROCK block, opened


@torch.no_grad()
def rock_anatomy(model, image_size: tuple[int, int]) -> tuple[pd.DataFrame, pd.Series]:
    """What flows through a ROCK / flat-MTL / SSD model for one image: each map's shape, in order
    (base map -> task features -> refined map -> predictions), and the parameters of each part."""
    model = model.eval()
    out = model(torch.zeros(1, 3, *image_size), return_features=True)
    feats = out["features"]
    rows = {"base map B (backbone's last map)": tuple(feats["base"].shape[1:])}
    for task, f in feats["task_features"].items():
        rows[f"task features F_{task}"] = tuple(f.shape[1:])
    rows["refined map R (into the SSD head)"] = tuple(feats["refined"].shape[1:])
    for task in feats["task_features"]:
        rows[f"prediction {task}"] = tuple(out[task].shape[1:])
    rows["SSD maps"] = " → ".join(f"{h}×{w}" for h, w in out["detection"]["feature_sizes"])
    rows["SSD default boxes"] = int(out["detection"]["priors"].shape[0])
    table = pd.DataFrame({"shape": pd.Series(rows, dtype=object)})
    params = {"backbone": model.backbone, "ROCK trunk": getattr(model.rock, "trunk", None),
              "ROCK encoders": getattr(model.rock, "encoders", None),
              "ROCK decoders (fusion)": getattr(model.rock, "decoders", None),
              "auxiliary predictors": model.aux_heads, "SSD head": model.ssd}
    counts = {name: sum(p.numel() for p in part.parameters()) if part is not None else 0
              for name, part in params.items()}
    return table, pd.Series(counts, name="parameters")


# ------------------------------------------------------------------ tables


def map_table(results: Mapping[str, list[RunResult]], aux_tasks: Sequence[str] = ()) -> pd.DataFrame:
    """mAP@0.5 and mAP@[.5:.95] (%) per variant: columns (metric, mean) and (metric, std) over seeds,
    then the primary metric of each of `aux_tasks` (NaN for a variant that does not predict it)."""
    table = metrics_table(results, ("detection",)).rename(columns=MAP_NAMES, level=0)
    if aux_tasks:
        table = pd.concat([table, metrics_table(results, aux_tasks, primary_only=True)], axis=1)
    return table


def difference_table(table: pd.DataFrame, reference: str,
                     metrics: Sequence[str] = ("mAP@0.5", "mAP@[.5:.95]")) -> pd.DataFrame:
    """Each variant's mean minus the reference row's mean, in points, per metric (`map_table` input).

    The std columns tell whether a difference is larger than the seed noise (one seed: no std)."""
    if reference not in table.index:
        raise ValueError(f"reference={reference!r}: not a row of the table ({list(table.index)})")
    out = {}
    for metric in metrics:
        mean = table[(metric, "mean")]
        out[f"Δ {metric} vs {reference}"] = mean - mean[reference]
    return pd.DataFrame(out)


# ------------------------------------------------------------------ figures


def map_bars(table: pd.DataFrame, title: str, reference: str | None = None, save_to=None):
    """Grouped bars of mAP@0.5 and mAP@[.5:.95] per variant with seed-std error bars; a dashed line
    marks the `reference` variant's mAP@0.5 (e.g. the plain SSD)."""
    labels = list(table.index)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(labels) + 1.5), 3.4))
    for k, metric in enumerate(("mAP@0.5", "mAP@[.5:.95]")):
        std = table[(metric, "std")]
        ax.bar(x + (k - 0.5) * 0.38, table[(metric, "mean")], 0.38, label=metric,
               yerr=std if (std > 0).any() else None, capsize=3)  # one seed: no error bar to draw
    if reference is not None and reference in table.index:
        ax.axhline(table.loc[reference, ("mAP@0.5", "mean")], color="grey", ls="--", lw=0.9,
                   label=f"{reference} mAP@0.5")
    ax.set_xticks(x, labels, rotation=20, ha="right")
    ax.set_ylabel("%")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig


# ------------------------------------------------------------------ evaluating stored detectors


def validation_set(result: RunResult):
    """The validation split a run was evaluated on (its dataset, size and domain)."""
    return make_dataset(result.config, "val", result.config.val_domain)


@torch.no_grad()
def evaluate_detector(result: RunResult, dataset=None) -> DetectionMeter:
    """A DetectionMeter filled with a stored run's detections on its validation set (or `dataset`).

    The same precision as the training loop's evaluation (bf16 autocast where it is fast), so
    the meter's mAP reproduces the run's stored metrics."""
    dataset = dataset if dataset is not None else validation_set(result)
    model = result.load_model()
    dtype = autocast_dtype(result.config.precision, torch.device("cpu"))
    meter = DetectionMeter(len(dataset.det_classes), class_names=dataset.det_classes)
    for batch in DataLoader(dataset, batch_size=result.config.batch_size, collate_fn=collate_batch):
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(batch["image"])
        meter.update(out["detection"], batch)
    return meter


def per_class_ap(results: Mapping[str, list[RunResult]], metric: str = "ap50", dataset=None) -> pd.DataFrame:
    """Per-class AP (%) of each variant, the mean over its seeds: rows = classes, columns = variants.
    `metric`: "ap50" (AP@0.5) or "ap" (AP@[.5:.95]); NaN for a class without validation boxes."""
    columns = {}
    for label, runs in results.items():
        per_seed = pd.DataFrame([evaluate_detector(r, dataset).per_class()[metric] for r in runs])
        columns[label] = per_seed.mean(axis=0)
    table = pd.DataFrame(columns)
    table.index.name = "class"
    return table


def per_class_bars(table: pd.DataFrame, title: str = "per-class AP@0.5", save_to=None):
    """Horizontal grouped bars of a per-class table (classes sorted by the last column's AP);
    classes without validation boxes (NaN everywhere) are left out."""
    table = table.dropna(how="all")
    order = table.sort_values(table.columns[-1]).index
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(order) + 1.2))
    table.loc[order].plot.barh(ax=ax, width=0.8)
    ax.set_xlabel("AP (%)")
    ax.set_ylabel("")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig


def busy_images(dataset, n: int, min_objects: int = 2) -> list[int]:
    """The first `n` items with at least `min_objects` boxes (galleries worth looking at)."""
    raw = getattr(dataset, "raw", None)
    found = []
    for i in range(len(dataset)):
        if len((raw(i) if raw else dataset[i])["labels"]) >= min_objects:
            found.append(i)
            if len(found) == n:
                break
    return found


@torch.no_grad()
def predict(model, dataset, indices: Sequence[int], **postprocess_options) -> list[dict]:
    """Decoded detections (postprocess: xyxy pixels, scores, labels) of `model` on some items."""
    batch = collate_batch([dataset[i] for i in indices])
    return postprocess(model.eval()(batch["image"])["detection"], **postprocess_options)


def top_detections(detections: dict, k: int, min_score: float = 0.0) -> dict:
    """The `k` highest-scoring detections (postprocess sorts by score), those above `min_score`."""
    keep = detections["scores"] >= min_score
    return {key: value[keep][:k] for key, value in detections.items()}


def detection_gallery(dataset, predictions: Mapping[str, list[dict]], indices: Sequence[int],
                      min_score: float = 0.0, save_to=None):
    """Rows = images; columns = the ground truth, then each model's detections.

    A weak detector's scores are all low, so a fixed threshold would show it as empty: each model
    shows its k best detections (k = the image's number of true boxes, at least 1) above
    `min_score`, with the scores in the title -- strong and weak models on the same footing."""
    names = ["ground truth", *predictions]
    fig, axes = plt.subplots(len(indices), len(names), figsize=(2.3 * len(names), 2.4 * len(indices)),
                             squeeze=False)
    for row, index in enumerate(indices):
        item = dataset[index]
        image = item["image"].permute(1, 2, 0).clamp(0, 1).numpy()
        k = max(len(item["labels"]), 1)
        for col, name in enumerate(names):
            ax = axes[row, col]
            ax.imshow(image)
            if name == "ground truth":
                draw_boxes(ax, item["boxes"], item["labels"], dataset.det_classes, dataset.classes)
                title = f"#{index}: {len(item['labels'])} objects"
            else:
                shown = top_detections(predictions[name][row], k, min_score)
                draw_boxes(ax, shown["boxes"], shown["labels"], dataset.det_classes, dataset.classes)
                title = f"{name}: " + (" ".join(f"{s:.2f}" for s in shown["scores"].tolist()) or "none")
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig


# ------------------------------------------------------------------ the conclusion


def ranking_verdict(table: pd.DataFrame, order: Sequence[str], metric: str = "mAP@0.5") -> tuple[bool, str]:
    """Does `table` rank the variants as `order` claims (best first), on `metric`'s mean?

    Returns (holds, a markdown sentence with the numbers). Each adjacent gap is compared with the
    larger of the two seed-stds: a gap inside it is "within seed noise" (no std with one seed: the
    sentence says so instead of pretending to know)."""
    missing = [v for v in order if v not in table.index]
    if missing:
        raise ValueError(f"order: {missing} not in the table ({list(table.index)})")
    mean, std = table[(metric, "mean")], table[(metric, "std")]
    holds = all(mean[a] > mean[b] for a, b in zip(order, order[1:], strict=False))
    values = " vs ".join(f"{v} {mean[v]:.2f}" + (f" ± {std[v]:.2f}" if std[v] > 0 else "") for v in order)
    gaps = []
    for a, b in zip(order, order[1:], strict=False):
        noise = max(std[a], std[b])
        size = "" if noise == 0 else (" (beyond seed noise)" if abs(mean[a] - mean[b]) > noise
                                      else " (within seed noise)")
        gaps.append(f"{a} − {b} = {mean[a] - mean[b]:+.2f}{size}")
    verdict = "**holds**" if holds else "**does not hold**"
    text = f"{metric}: {values}. The ordering {' > '.join(order)} {verdict}; gaps: {', '.join(gaps)}."
    if (std[list(order)] == 0).all():
        text += " One seed: no estimate of seed noise, read small gaps with care."
    return holds, text
