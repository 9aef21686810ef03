"""The detection side of the suite (notebook 04, ROCK): tables, figures and checks for detectors.

    box_statistics(gt_boxes(val_set), (128, 128))    # object sizes and aspect ratios
    coverage = prior_coverage(gt_boxes(val_set), (128, 128), models={"SSD": ssd})  # can its priors fit?
    table = map_table(results)                      # mAP@0.5 / mAP@[.5:.95], mean and std over seeds
    map_bars(table, "SSD vs ROCK", save_to=...)     # error bars only when seeds were repeated
    per_class = per_class_ap({"SSD": ssd_runs, "ROCK": rock_runs})
    detection_gallery(val_set, {"SSD": predict(ssd, val_set, idx), ...}, idx, save_to=...)
    boot = MapBootstrap(200)(results)               # one seed: mAP@0.5 on resampled validation images
    compare_map(results, "ROCK", "SSD", boot).text  # the verdict rule of `significance.compare`
    ranking_verdict(results, ["ROCK", "flat MTL", "SSD"], boot)   # the conclusion, computed

`results` are what `experiments.run_variants` returns: {label: [RunResult per seed]}. Every statement
that one variant is better than another goes through `significance.compare`: Welch's t over seeds,
or with one seed a paired bootstrap over the validation images (`MapBootstrap`), else "not separable
at this budget".
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from torchvision.ops import box_convert, box_iou

from . import significance
from .data import collate_batch
from .experiments import metrics_table
from .metrics import DetectionMeter
from .models.detection import ROCK_EXTRA_LAYERS, SSDHead, feature_sizes, postprocess
from .plots import draw_boxes, save_figure
from .runs import RunResult
from .train import autocast_dtype, make_dataset

# the detection metrics as the store names them -> as the papers print them
MAP_NAMES = {"detection/map50": "mAP@0.5", "detection/map": "mAP@[.5:.95]"}



# ------------------------------------------------------------------ can the priors fit the objects?


def ssd_feature_sizes(image_size: tuple[int, int], stride: int,
                      extra_layers: int = ROCK_EXTRA_LAYERS) -> list[tuple[int, int]]:
    """The maps an SSDHead predicts from for a base map of `stride` (the head's own rule,
    `detection.feature_sizes`): the base map, then halved by each extra layer until 1x1."""
    return feature_sizes((math.ceil(image_size[0] / stride), math.ceil(image_size[1] / stride)), extra_layers)


def gt_boxes(dataset, max_samples: int | None = None) -> torch.Tensor:
    """All ground-truth boxes (N, 4) xyxy pixels of the first `max_samples` items of a dataset."""
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    raw = getattr(dataset, "raw", None)  # the synthetic cache: no need to build every item's tensors
    boxes = [np.asarray((raw(i) if raw else dataset[i])["boxes"], dtype=np.float32).reshape(-1, 4)
             for i in range(n)]
    return torch.from_numpy(np.concatenate(boxes)) if boxes else torch.zeros(0, 4)


def box_statistics(boxes: torch.Tensor, image_size: tuple[int, int],
                   quantiles: Sequence[float] = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)) -> pd.DataFrame:
    """Quantiles of the objects' size sqrt(w h) in pixels and as a fraction of the image's shorter side
    (the unit of the prior scales), and of their aspect ratio w / h: what the priors must fit."""
    boxes = boxes.float().reshape(-1, 4)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    size = (w * h).sqrt()
    columns = {"size (px)": size, "size / shorter side": size / min(image_size), "aspect ratio w/h": w / h}
    values = {name: np.quantile(v.numpy(), quantiles) if len(v) else np.full(len(quantiles), np.nan)
              for name, v in columns.items()}
    return pd.DataFrame(values, index=[f"{q:.0%}" for q in quantiles])


def detector_priors(model, image_size: tuple[int, int]) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """The map sizes and the (P, 4) priors a built detector (ssd / flat_mtl / rock) uses on images of
    `image_size`: its head's default boxes for its backbone's base-map stride."""
    stride = model.backbone.strides[-1]
    base = (math.ceil(image_size[0] / stride), math.ceil(image_size[1] / stride))
    return model.ssd.default_boxes(base, image_size)


def prior_coverage(boxes: torch.Tensor, image_size: tuple[int, int], strides: Sequence[int] = (32, 16),
                   iou: float = 0.5, models: Mapping[str, torch.nn.Module] | None = None,
                   **head_options) -> pd.DataFrame:
    """How well SSD's default boxes can match the objects, before any training.

    The priors are those of the models themselves: with `models` ({label: built detector}) one row per
    model (`detector_priors`); otherwise one row per base-map stride in `strides`, with the priors of an
    SSDHead built with `head_options` (its defaults: what every detector builds unless told otherwise).

    A prior whose IoU with an object reaches `iou` is a positive the classifier can learn from
    (detection.match); below it the object only gets its single best prior, forced, and the box
    regression must do all the work. Columns: the SSD maps, the number of priors, the median best
    IoU of an object with any prior, the share of objects with a prior at IoU >= `iou`, and the
    mean number of such priors per object."""
    h, w = image_size
    normalised = boxes.float().reshape(-1, 4) / torch.tensor([w, h, w, h], dtype=torch.float32)
    if models is not None:
        sources = {label: detector_priors(model, image_size) for label, model in models.items()}
    else:
        head = SSDHead(1, 1, **head_options)
        sources = {f"1/{s}": head.default_boxes((math.ceil(h / s), math.ceil(w / s)), image_size)
                   for s in strides}
    rows = {}
    for label, (sizes, priors) in sources.items():
        overlap = box_iou(normalised, box_convert(priors, "cxcywh", "xyxy"))  # (objects, priors)
        if len(normalised):
            best = overlap.max(dim=1).values
            stats = (float(best.median()), float((best >= iou).float().mean()),
                     float((overlap >= iou).sum(1).float().mean()))
        else:  # no object: nothing to cover
            stats = (math.nan,) * 3
        rows[label] = {"SSD maps": " → ".join(f"{a}×{b}" for a, b in sizes), "priors": len(priors),
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
    then the primary metric of each of `aux_tasks` (NaN for a variant that does not predict it).
    `table.attrs["seeds"]` = {variant: number of seeds}, which the figures read."""
    table = metrics_table(results, ("detection",)).rename(columns=MAP_NAMES, level=0)
    if aux_tasks:
        table = pd.concat([table, metrics_table(results, aux_tasks, primary_only=True)], axis=1)
    table.attrs["seeds"] = {label: len(runs) for label, runs in results.items()}  # for the figures
    return table


def difference_table(table: pd.DataFrame, reference: str,
                     metrics: Sequence[str] = ("mAP@0.5", "mAP@[.5:.95]")) -> pd.DataFrame:
    """Each variant's mean minus the reference row's mean, in points, per metric (`map_table` input).

    A difference alone is not a result: whether it is one is `compare_map`'s verdict."""
    if reference not in table.index:
        raise ValueError(f"reference={reference!r}: not a row of the table ({list(table.index)})")
    out = {}
    for metric in metrics:
        mean = table[(metric, "mean")]
        out[f"Δ {metric} vs {reference}"] = mean - mean[reference]
    return pd.DataFrame(out)


# ------------------------------------------------------------------ figures


def seed_counts(table: pd.DataFrame, n_seeds: int | Mapping[str, int] | None = None) -> dict[str, int]:
    """{variant: number of seeds} of a `map_table` / `per_class_ap` table: `n_seeds` (one number for
    all, or per variant) or what the table recorded in `attrs["seeds"]`."""
    if n_seeds is None:
        n_seeds = table.attrs.get("seeds")
    if n_seeds is None:
        raise ValueError("the number of seeds per variant is unknown (no attrs['seeds']): pass n_seeds")
    if isinstance(n_seeds, Mapping):
        missing = [v for v in table.index if v not in n_seeds]
        if missing:
            raise ValueError(f"n_seeds: no count for {missing}")
        return {v: int(n_seeds[v]) for v in table.index}
    return {v: int(n_seeds) for v in table.index}


def seed_note(counts: Mapping[str, int], spread: bool = True) -> str:
    """What a figure's numbers are: "1 seed", "mean ± std over 3 seeds" (`spread=False`: "mean over 3
    seeds"), or the per-variant counts when they differ."""
    values = sorted(set(counts.values()))
    if values == [1]:
        return "1 seed"
    what = "mean ± std" if spread else "mean"
    if len(values) == 1:
        return f"{what} over {values[0]} seeds"
    return f"{what} over {values[0]}–{values[-1]} seeds" + (", no error bar with 1 seed" if spread else "")


def map_bars(table: pd.DataFrame, title: str, reference: str | None = None, save_to=None,
             n_seeds: int | Mapping[str, int] | None = None):
    """Grouped bars of mAP@0.5 and mAP@[.5:.95] per variant; a dashed line marks the `reference`
    variant's mAP@0.5 (e.g. the plain SSD). Error bars (the std over seeds) only where a spread was
    measured: a variant with one seed has none. The title says which: "1 seed" or "mean ± std over
    N seeds". The seed counts come from `n_seeds` or from `map_table`'s `attrs["seeds"]`."""
    counts = seed_counts(table, n_seeds)
    repeated = np.array([counts[v] > 1 for v in table.index])
    labels = list(table.index)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(labels) + 1.5), 3.4))
    for k, metric in enumerate(("mAP@0.5", "mAP@[.5:.95]")):
        std = np.where(repeated, table[(metric, "std")].to_numpy(dtype=float), np.nan)
        ax.bar(x + (k - 0.5) * 0.38, table[(metric, "mean")], 0.38, label=metric,
               yerr=std if repeated.any() else None, capsize=3)
    if reference is not None and reference in table.index:
        ax.axhline(table.loc[reference, ("mAP@0.5", "mean")], color="grey", ls="--", lw=0.9,
                   label=f"{reference} mAP@0.5")
    ax.set_xticks(x, labels, rotation=20, ha="right")
    ax.set_ylabel("%")
    ax.set_title(f"{title} ({seed_note(counts)})")
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
    table.attrs["seeds"] = {label: len(runs) for label, runs in results.items()}  # for the figure
    return table


def per_class_bars(table: pd.DataFrame, title: str = "per-class AP@0.5", save_to=None,
                   n_seeds: int | Mapping[str, int] | None = None):
    """Horizontal grouped bars of a per-class table (classes sorted by the last column's AP);
    classes without validation boxes (NaN everywhere) are left out. The bars are means over seeds,
    without error bars; the title says over how many seeds (`n_seeds`, or `per_class_ap`'s
    `attrs["seeds"]`)."""
    counts = seed_counts(table.T, n_seeds)  # the variants are the columns here
    table = table.dropna(how="all")
    order = table.sort_values(table.columns[-1]).index
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(order) + 1.2))
    table.loc[order].plot.barh(ax=ax, width=0.8)
    ax.set_xlabel("AP (%)")
    ax.set_ylabel("")
    ax.set_title(f"{title} ({seed_note(counts, spread=False)})")
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


# ------------------------------------------------------------------ a bootstrap over validation images


def map50_replicates(meter: DetectionMeter, resamples: np.ndarray) -> np.ndarray:
    """mAP@0.5 (%) of a filled DetectionMeter's detections on each row of `resamples` (R, N): image
    indices drawn with replacement from the meter's N images (an image drawn twice counts twice).

    The meter's own metric code does the work: its COCO datasets are built as torchmetrics builds
    them for `compute`, pycocotools' COCOeval matches the detections of each image once (IoU 0.5, all
    areas, at most 100 detections per image), and each resample only re-runs COCOeval's accumulation
    on the resampled images. The identity resample reproduces the meter's mAP@0.5."""
    from pycocotools.cocoeval import COCOeval

    resamples = np.atleast_2d(np.asarray(resamples, dtype=np.int64))
    if meter.n_images == 0:
        return np.full(len(resamples), math.nan)
    if resamples.shape[1] != meter.n_images or resamples.min() < 0 or resamples.max() >= meter.n_images:
        raise ValueError(f"resamples: rows of {meter.n_images} indices in [0, {meter.n_images}) expected, "
                         f"got shape {resamples.shape}")
    m = meter.metric
    preds, target = m._coco_backend._get_coco_datasets(
        m.groundtruth_labels, m.groundtruth_box, m.groundtruth_mask, m.groundtruth_crowds,
        m.groundtruth_area, m.detection_labels, m.detection_box, m.detection_mask, m.detection_scores,
        m.iou_type, average=m.average)
    evaluator = COCOeval(target, preds, iouType="bbox")
    params = evaluator.params
    params.iouThrs = np.array([0.5])
    params.recThrs = np.array(m.rec_thresholds, dtype=np.float64)
    params.maxDets = [m.max_detection_thresholds[-1]]
    params.areaRng, params.areaRngLbl = [[0.0, 1e10]], ["all"]  # COCO's "all"
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
    per_image, n, classes = list(evaluator.evalImgs), len(params.imgIds), len(params.catIds)
    values = []
    for rows in resamples:
        evaluator.evalImgs = [per_image[k * n + i] for k in range(classes) for i in rows]
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.accumulate()
        precision = evaluator.eval["precision"][0, :, :, 0, -1]  # (recall thresholds, classes)
        valid = precision[precision > -1]  # -1: a class without ground truth in the resample
        values.append(float(valid.mean()) * 100 if valid.size else math.nan)
    return np.asarray(values)


class MapBootstrap:
    """Paired bootstrap of mAP@0.5 over the validation images, for variants trained with one seed.

        boot = MapBootstrap(200)(results)      # {variant: (200,) mAP@0.5 replicates}, one-seed variants
        compare_map(results, "ROCK", "SSD", boot)

    One seed gives no spread over seeds; what can still be measured is how much mAP@0.5 depends on
    which validation images were drawn. Every variant is re-evaluated (`evaluate_detector`) on its
    validation set and scored on the same `replicates` resamples of its images (seeded by `seed`), so
    that the gap of two variants is computed image set by image set -- the interval
    `significance.compare` reads. It covers the choice of validation images only, not training
    noise: another seed can move a detector by more. Variants with several seeds are skipped (the
    verdict uses Welch's t over seeds). All variants scored by one instance must be validated on the
    same images: a different ground truth is refused. Results are cached per run."""

    def __init__(self, replicates: int, seed: int = 0, dataset=None):
        if replicates < 1:
            raise ValueError(f"replicates={replicates}: at least 1")
        self.replicates, self.seed, self.dataset = int(replicates), seed, dataset
        self.resamples: np.ndarray | None = None
        self._truth: tuple | None = None
        self._cache: dict[str, np.ndarray] = {}

    def run(self, result: RunResult) -> np.ndarray:
        """The (replicates,) mAP@0.5 of one stored run on the resampled validation images."""
        key = str(result.directory)
        if key not in self._cache:
            meter = evaluate_detector(result, self.dataset)
            m = meter.metric
            boxes = torch.cat([b.reshape(-1, 4) for b in m.groundtruth_box])
            truth = ([len(b) for b in m.groundtruth_box], boxes, torch.cat(m.groundtruth_labels))
            if self._truth is None:
                self._truth = truth
                rng = np.random.default_rng(self.seed)
                self.resamples = rng.integers(0, meter.n_images, (self.replicates, meter.n_images))
            elif truth[0] != self._truth[0] or not (torch.equal(truth[1], self._truth[1])
                                                      and torch.equal(truth[2], self._truth[2])):
                raise ValueError(f"{result.directory.name}: validated on other images than the runs before "
                                 "it; a paired bootstrap needs one validation set (use another MapBootstrap)")
            self._cache[key] = map50_replicates(meter, self.resamples)
        return self._cache[key]

    def __call__(self, results: Mapping[str, list[RunResult]]) -> dict[str, np.ndarray]:
        return {label: self.run(runs[0]) for label, runs in results.items() if len(runs) == 1}


# ------------------------------------------------------------------ verdicts and the conclusion


def per_seed(results: Mapping[str, list[RunResult]], variant: str, metric: str = "mAP@0.5") -> list[float]:
    """The per-seed values of a detection metric ("mAP@0.5" or "mAP@[.5:.95]") of one variant."""
    keys = {name: key for key, name in MAP_NAMES.items()}
    if metric not in keys:
        raise ValueError(f"metric={metric!r}: one of {list(keys)}")
    if variant not in results:
        raise ValueError(f"{variant!r}: not among the results ({list(results)})")
    return [float(r.metrics[keys[metric]]) for r in results[variant]]


def compare_map(results: Mapping[str, list[RunResult]], a: str, b: str,
                boot: Mapping[str, np.ndarray] | None = None, metric: str = "mAP@0.5",
                floor: float | None = None) -> significance.Verdict:
    """`significance.compare` on the per-seed `metric` (higher is better) of variants `a` and `b`.
    With one seed on a side, the bootstrap replicates in `boot` (`MapBootstrap`, mAP@0.5 only) decide
    when both variants have them; otherwise the verdict is "not separable at this budget"."""
    boot = boot or {}
    use_boot = metric == "mAP@0.5" and a in boot and b in boot
    return significance.compare(per_seed(results, a, metric), per_seed(results, b, metric), a, b,
                                higher_is_better=True, boot_a=boot[a] if use_boot else None,
                                boot_b=boot[b] if use_boot else None, floor=floor)


def values_text(results: Mapping[str, list[RunResult]], variants: Sequence[str],
                metric: str = "mAP@0.5") -> str:
    """ "ROCK 30.00 ± 1.00, SSD 24.50 ± 1.00 (mean ± std over 3 seeds)", or the values of one seed."""
    counts = {v: len(results[v]) for v in variants}
    parts = []
    for v in variants:
        values = per_seed(results, v, metric)
        parts.append(f"{v} {np.mean(values):.2f}" + (f" ± {np.std(values):.2f}" if len(values) > 1 else ""))
    return f"{', '.join(parts)} ({seed_note(counts)})"


def ranking_verdict(results: Mapping[str, list[RunResult]], order: Sequence[str],
                    boot: Mapping[str, np.ndarray] | None = None,
                    metric: str = "mAP@0.5") -> tuple[bool, str]:
    """Do the results support the ordering `order` (best first) on `metric`?

    Each adjacent pair is decided by `compare_map` (Welch's t over seeds; one seed: the bootstrap in
    `boot`, else not separable). The ordering **holds** when every adjacent pair is separable in the
    claimed direction, **does not hold** when one is separable the other way round, and is **not
    established at this budget** otherwise. Returns (holds, a markdown sentence with the numbers and
    each pair's verdict)."""
    missing = [v for v in order if v not in results]
    if missing:
        raise ValueError(f"order: {missing} not in the results ({list(results)})")
    verdicts = [compare_map(results, a, b, boot, metric) for a, b in zip(order, order[1:], strict=False)]
    holds = all(v.separable and v.better == a for v, a in zip(verdicts, order, strict=False))
    reversed_ = any(v.separable and v.better != a for v, a in zip(verdicts, order, strict=False))
    state = ("**holds**" if holds else "**does not hold**" if reversed_
             else "is **not established at this budget**")
    text = (f"{metric}: {values_text(results, order, metric)}. The ordering {' > '.join(order)} {state}: "
            + "; ".join(v.text for v in verdicts) + ".")
    return holds, text
