"""Look inside trained runs: each task's prediction next to its ground truth and its error, MTI-Net's
per-scale initial predictions and distillation attention, ROCK's auxiliary predictions and detections.

    result, model, val = open_run("mtinet-0123abcd4567")  # name: runs.load_results()["run"]
    sample = val[0]
    outputs = predict(model, sample)                      # a batch of one, eval mode, with features
    for view in available_views(outputs, sample):
        render_view(view, sample, outputs, val)
    run_inspector(runs.load_results())                    # the same views behind ipywidgets controls

Every figure function returns its matplotlib Figure and takes `save_to` (a PNG path), as plots.py
does. Outputs keep the batch dimension of `predict` (a batch of one); samples are dataset items.
Error maps are NaN where the label is missing, so a hole in the ground truth never reads as "no error".
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.patches import Rectangle

from . import plots
from .runs import RunResult, default_runs_root, run_directory
from .train import TrainConfig, make_dataset, resolved_precision

DENSE_TASKS = plots.DENSE_TASKS
VIEWS = ("predictions", "per-scale predictions", "distillation attention", "detections")
# what one error map measures, per pixel (the colour-bar label) and its colour range
ERROR_LABELS = {"semseg": "wrong class", "depth": "|error| (m)", "normals": "angle (°)",
                "edge": "|p − label|", "sal": "|p − label|"}
ERROR_RANGES = {"semseg": (0, 1), "normals": (0, 90), "edge": (0, 1), "sal": (0, 1)}  # depth: per image


# ---------------------------------------------------------------- runs and data


def load_run(run: str, root=None) -> RunResult:
    """A complete stored run by its directory name (the `run` column of runs.load_results())."""
    directory = Path(root) if root is not None else default_runs_root()
    directory = directory / run
    if not (directory / "metrics.json").exists():
        raise ValueError(f"run {run!r}: no complete run in {directory} (metrics.json is missing)")
    config = TrainConfig.from_dict(json.loads((directory / "config.json").read_text()))
    history = directory / "history.json"
    return RunResult(config, directory, json.loads((directory / "metrics.json").read_text()),
                     pd.DataFrame(json.loads(history.read_text()) if history.exists() else []), trained=False)


def find_run(table: pd.DataFrame, like: TrainConfig, root=None) -> str | None:
    """The stored run to inspect for `like`: that exact config if it is complete, else a complete run of
    the same model trained on the same data with the same schedule, else None. `table` is
    runs.load_results(root).

    Among the candidates, in this order: the same tasks (e.g. ROCK with all its auxiliary tasks); the
    model options closest to `like`'s (fewest options set differently or only on one side: for the
    study's MTI-Net, whose options carry the study's `task_widths` in every variant, the full model
    before its ablations such as `fpm=False` or `num_scales=3`); the same backbone and backbone options;
    trained at the precision `like` resolves to on this machine (a bf16 run before an fp32 one where
    "auto" means bf16: the run the notebooks beside it train and show); the same seed; then the run
    name, so that the choice never depends on the table's row order."""
    if (run_directory(like, root) / "metrics.json").exists():
        return run_directory(like, root).name
    if table.empty:
        return None
    # the data and schedule decide whether the run's validation images are those of `like`
    same = [c for c in ("model", "dataset", "data_dir", "dataset_options", "data_seed", "num_train",
                        "num_val", "epochs", "val_domain") if c in table]
    target = like.to_dict()
    rows = table[[all(_same(row[c], target[c]) for c in same) and _same(row.get("size"), target["size"])
                  for _, row in table.iterrows()]]
    if "status" in rows:
        rows = rows[rows["status"] == "complete"]
    if rows.empty:
        return None

    precision = resolved_precision(like.precision)

    def rank(row) -> tuple:
        options = _options(row.get("model_options"))
        wanted = target["model_options"] or {}
        differing = sum(not _same(options.get(k), wanted.get(k)) for k in {*options, *wanted})
        backbone = (_same(row.get("backbone"), target["backbone"])
                    and _same(_options(row.get("backbone_options")), target["backbone_options"] or {}))
        return (not _same(row["tasks"], target["tasks"]), differing, not backbone,
                row.get("trained_precision") != precision, not _same(row.get("seed"), target["seed"]),
                str(row["run"]))

    return str(min(rank(row) for _, row in rows.iterrows())[-1])


def _options(value) -> dict:
    # a config's options dict; pandas gives NaN for a column a row does not have
    return value if isinstance(value, dict) else {}


def _same(a, b) -> bool:
    return _plain_deep(a) == _plain_deep(b)


def _plain_deep(value):
    # JSON turns tuples into lists and pandas turns None into NaN: compare what they stand for, at any depth
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list | tuple):
        return [_plain_deep(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_deep(v) for k, v in value.items()}
    return value


_DATASETS: dict[str, object] = {}
_OPENED: dict[tuple, tuple] = {}


def validation_set(config: TrainConfig):
    """The validation split a run was evaluated on (kept per data config: the widget asks often)."""
    key = json.dumps({k: config.to_dict()[k] for k in ("dataset", "data_dir", "dataset_options", "size",
                                                       "num_val", "val_domain", "data_seed",
                                                       "missing_fraction")}, sort_keys=True, default=list)
    if key not in _DATASETS:
        _DATASETS[key] = make_dataset(config, "val", config.val_domain)
    return _DATASETS[key]


def open_run(run: str, root=None) -> tuple[RunResult, torch.nn.Module, object]:
    """(result, trained model in eval mode, validation split) of a stored run, kept after the first call.
    The key includes the checkpoint's modification time, so a retrained run is loaded afresh."""
    result = load_run(run, root)
    key = (str(result.directory), (result.directory / "checkpoint.pt").stat().st_mtime_ns)
    if key not in _OPENED:
        _OPENED[key] = (result, result.load_model(), validation_set(result.config))
    return _OPENED[key]


@torch.no_grad()
def predict(model: torch.nn.Module, sample: dict) -> dict:
    """The model's outputs for one dataset item (a batch of one), in eval mode, with out["features"]."""
    model.eval()
    return model(sample["image"][None].float(), return_features=True)


# ---------------------------------------------------------------- error maps


def _resize(pred: torch.Tensor, size) -> torch.Tensor:
    """(C, h, w) -> (C, H, W), bilinear: how the losses compare a low-resolution prediction with its label."""
    if tuple(pred.shape[-2:]) == tuple(size):
        return pred
    return F.interpolate(pred[None], size=tuple(size), mode="bilinear", align_corners=False)[0]


def error_map(task: str, pred, target) -> np.ndarray:
    """Per-pixel error (H, W) of one image's raw prediction (C, h, w: logits or values, any resolution)
    against its label, NaN where the label is missing:

    semseg: 1 where the arg-max class is wrong, 0 where right; depth: |prediction − label| in metres;
    normals: the angle in degrees between the normalised prediction and the label; edge / sal: the
    distance |sigmoid(logit) − label| between probability and label.
    """
    if task not in DENSE_TASKS:
        raise ValueError(f"task={task!r}: error maps exist for the dense tasks {list(DENSE_TASKS)}")
    pred = torch.as_tensor(pred).detach().float().cpu()
    target = torch.as_tensor(target).detach().float().cpu()
    target = target[None] if target.dim() == 2 else target  # semseg labels are (H, W)
    pred = _resize(pred, target.shape[-2:])
    if task == "semseg":
        error, valid = (pred.argmax(0) != target[0]).float(), target[0] != 255
    elif task == "depth":
        error, valid = (pred[0] - target[0]).abs(), target[0] > 0
    elif task == "normals":
        p, g = F.normalize(pred, dim=0), F.normalize(target, dim=0)
        # atan2(|p x g|, p . g): exact near 0° where acos of a rounded dot product is not
        error = torch.rad2deg(torch.atan2(torch.linalg.cross(p, g, dim=0).norm(dim=0), (p * g).sum(0)))
        valid = target.abs().sum(0) > 0
    else:  # edge, sal
        error, valid = (torch.sigmoid(pred[0]) - target[0]).abs(), target[0] != 255
    return torch.where(valid, error, torch.nan).numpy()


def _mean(a: np.ndarray) -> float:
    return float(np.nanmean(a)) if np.isfinite(a).any() else math.nan


def image_errors(sample: dict, outputs: dict, tasks=None) -> dict[str, float]:
    """The mean of every dense task's error map on this image: {"depth |error| (m)": ..., ...}."""
    tasks = _dense_tasks(sample, outputs, tasks)
    return {f"{t} {ERROR_LABELS[t]}": _mean(error_map(t, outputs[t][0], sample[t])) for t in tasks}


@torch.no_grad()
def _split_outputs(model: torch.nn.Module, dataset, max_images: int | None, batch_size: int):
    """(sample, outputs of a batch of one) for the first `max_images` images of `dataset`, computed in
    batches (eval mode): a whole validation split costs seconds, not one forward pass per image."""
    model.eval()
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    for start in range(0, n, batch_size):
        samples = [dataset[i] for i in range(start, min(start + batch_size, n))]
        out = model(torch.stack([s["image"] for s in samples]).float())
        for k, sample in enumerate(samples):
            yield sample, {t: v[k:k + 1] for t, v in out.items() if torch.is_tensor(v)} | {
                "deep": [{t: p[k:k + 1] for t, p in scale.items()} for scale in out.get("deep") or []]}


def boundary_mask(edge, radius: int = 1) -> np.ndarray:
    """(H, W) bool: the pixels within `radius` pixels (a square) of an edge-label pixel. The label is one
    pixel wide on the occluding side of a boundary, and a prediction's error spreads over both sides."""
    edge = torch.as_tensor(edge).float()
    edge = (edge[0] if edge.dim() == 3 else edge) == 1  # 255 (missing) is no edge
    grown = F.max_pool2d(edge[None, None].float(), 2 * radius + 1, stride=1, padding=radius)
    return grown[0, 0].bool().numpy()


def boundary_errors(model: torch.nn.Module, dataset, task: str = "depth", radius: int = 1,
                    max_images: int | None = None, batch_size: int = 32) -> pd.DataFrame:
    """Where `task`'s error sits over a split: rows "boundary" (within `radius` pixels of the edge label:
    object outlines, room corners, occlusions) and "elsewhere" (flat surfaces and object interiors);
    columns the mean per-pixel error (`error_map`), the group's share of the labelled pixels and its share
    of the summed error (%), over the first `max_images` images (None: all)."""
    sums, counts = np.zeros(2), np.zeros(2)
    for sample, outputs in _split_outputs(model, dataset, max_images, batch_size):
        if task not in outputs or task not in sample:
            raise ValueError(f"boundary_errors: no {task!r} prediction and label to compare")
        error = error_map(task, outputs[task][0], sample[task])
        near = boundary_mask(sample["edge"], radius)
        for k, where in enumerate((near, ~near)):
            values = error[where & np.isfinite(error)]
            sums[k] += values.sum()
            counts[k] += values.size
    return pd.DataFrame({f"mean {ERROR_LABELS[task]}": sums / np.maximum(counts, 1),
                         "pixels (%)": counts / max(counts.sum(), 1) * 100,
                         "error (%)": sums / max(sums.sum(), 1e-12) * 100},
                        index=pd.Index(["boundary", "elsewhere"], name=f"{task}, ±{radius} px of an edge"))


def scale_errors(model: torch.nn.Module, dataset, tasks=None, max_images: int | None = None,
                 batch_size: int = 32) -> pd.DataFrame:
    """The pooled per-pixel error (`error_map`, mean over every labelled pixel of the first `max_images`
    images) of each initial prediction per scale (deep supervision, after upsampling to the label) and of
    the final prediction: one row per task, columns "1/2" … (the scale's stride) and "final" (NaN for an
    auxiliary task, which has none)."""
    sums: dict[tuple[str, str], float] = {}
    counts: dict[tuple[str, str], int] = {}
    for sample, outputs in _split_outputs(model, dataset, max_images, batch_size):
        deep = outputs["deep"]
        if not deep:
            raise ValueError("scale_errors: this model has no per-scale predictions (out['deep'] is empty)")
        size = _size(sample)
        for task in _dense_tasks(sample, deep[0], tasks):
            maps = [(f"1/{size[0] // scale[task].shape[-2]}", scale[task][0]) for scale in deep]
            maps += [("final", outputs[task][0])] if task in outputs else []
            for name, pred in maps:
                error = error_map(task, pred, sample[task])
                valid = np.isfinite(error)
                sums[task, name] = sums.get((task, name), 0.0) + float(error[valid].sum())
                counts[task, name] = counts.get((task, name), 0) + int(valid.sum())
    table = pd.Series({k: sums[k] / max(counts[k], 1) for k in sums}).unstack()
    order = sorted((c for c in table.columns if c != "final"), key=lambda c: int(c.split("/")[1]))
    rows = list(dict.fromkeys(task for task, _ in sums))  # the tasks in the model's order
    return table.reindex(index=rows, columns=order + ["final"])


def _dense_tasks(sample: dict, outputs: dict, tasks=None) -> list[str]:
    """The dense tasks that have both a prediction and a label (in the order asked)."""
    return [t for t in (DENSE_TASKS if tasks is None else tasks) if t in DENSE_TASKS and t in outputs
            and t in sample]


# ---------------------------------------------------------------- colours


def colorize_label(task: str, target, num_classes: int) -> np.ndarray:
    """A label map as RGB, with the conventions of plots.py (missing: black depth, grey normals / 255)."""
    if task == "semseg":
        return plots.colorize_semseg(target, num_classes)
    if task == "depth":
        return plots.colorize_depth(target)
    if task == "normals":
        return plots.colorize_normals(target)
    label = plots._hw(target)
    rgb = np.repeat((label == 1)[..., None].astype(float), 3, axis=-1)
    rgb[label == 255] = plots.MISSING_GREY
    return rgb


def colorize_prediction(task: str, pred, target=None) -> np.ndarray:
    """A raw prediction (C, h, w) as RGB at its own resolution. Depth shares the label's colour range
    (so colours compare across the row) and is kept above 0, which would read as a hole."""
    pred = torch.as_tensor(pred).detach().float().cpu()
    if task == "semseg":
        return plots.colorize_semseg(pred.argmax(0), pred.shape[0])
    if task == "depth":
        depth = plots._hw(target) if target is not None else np.zeros(1)
        valid = depth[depth > 0]
        lo, hi = (float(valid.min()), float(valid.max())) if valid.size else (None, None)
        return plots.colorize_depth(pred[0].clamp_min(1e-3), lo, hi)
    if task == "normals":
        return plots.colorize_normals(F.normalize(pred, dim=0))
    return np.repeat(torch.sigmoid(pred[0]).numpy()[..., None], 3, axis=-1)


def _show(ax, picture, size, **style):
    """Draw any-resolution maps over the same image extent, so that a 2x2 map lines up with the image."""
    h, w = size
    im = ax.imshow(picture, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest", **style)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _error_style(task: str, error: np.ndarray) -> dict:
    cmap = colormaps["magma"].with_extremes(bad=str(plots.MISSING_GREY))  # no label: grey, not "no error"
    lo, hi = ERROR_RANGES.get(task, (0, max(float(np.nanpercentile(error, 99)), 1e-3)
                                     if np.isfinite(error).any() else 1.0))
    return {"cmap": cmap, "vmin": lo, "vmax": hi}


def _size(sample: dict) -> tuple[int, int]:
    return tuple(sample["image"].shape[-2:])


def _classes(dataset, name: str) -> tuple:
    return tuple(getattr(dataset, name, ()) or ())


# ---------------------------------------------------------------- the views


def prediction_figure(sample: dict, outputs: dict, tasks=None, save_to=None):
    """One row per dense task: ground truth, prediction, error map (+ its colour bar); the input
    image heads the first column. A prediction below the image's resolution (ROCK's auxiliary maps)
    is drawn at its own resolution; its error is taken after bilinear upsampling, as the loss does."""
    tasks = _dense_tasks(sample, outputs, tasks)
    if not tasks:
        raise ValueError("prediction_figure: no dense task has both a prediction and a label")
    size = _size(sample)
    fig, axes = plt.subplots(len(tasks), 4, figsize=(10, 2.3 * len(tasks) * size[0] / size[1] + 0.3),
                             squeeze=False)
    _show(axes[0, 0], plots._image(sample["image"]), size)
    axes[0, 0].set_title(f"image #{sample.get('index', '?')}", fontsize=9)
    for ax in axes[1:, 0]:
        fig.delaxes(ax)
    for row, task in zip(axes, tasks, strict=False):
        pred, target = outputs[task][0], sample[task]
        _show(row[1], colorize_label(task, target, pred.shape[0]), size)
        row[1].set_title(f"{task}: ground truth", fontsize=9)
        _show(row[2], colorize_prediction(task, pred, target), size)
        h, w = pred.shape[-2:]
        row[2].set_title("prediction" + ("" if (h, w) == size else f" ({h}×{w})"), fontsize=9)
        error = error_map(task, pred, target)
        im = _show(row[3], error, size, **_error_style(task, error))
        row[3].set_title(f"error: mean {_mean(error):.3g}", fontsize=9)
        fig.colorbar(im, ax=row[3], fraction=0.046, pad=0.03).set_label(ERROR_LABELS[task], fontsize=8)
    fig.tight_layout()
    plots.save_figure(fig, save_to)
    return fig


def deep_predictions_figure(sample: dict, outputs: dict, tasks=None, save_to=None):
    """MTI-Net's (and PAD-Net's) initial task predictions, the maps that get deep supervision: one row
    per task, the ground truth, then every scale from the finest to the coarsest, then the final
    prediction. Each panel's title gives the scale and the mean error (after upsampling)."""
    deep = outputs.get("deep") or []
    if not deep:
        raise ValueError("deep_predictions_figure: this model has no per-scale predictions "
                         "(out['deep'] is empty)")
    tasks = [t for t in _dense_tasks(sample, deep[0], tasks) if all(t in scale for scale in deep)]
    size = _size(sample)
    has_final = any(t in outputs for t in tasks)
    cols = 1 + len(deep) + has_final
    height = 2.2 * len(tasks) * size[0] / size[1] + 0.3
    fig, axes = plt.subplots(len(tasks), cols, figsize=(2.1 * cols, height), squeeze=False)
    for row, task in zip(axes, tasks, strict=True):
        target = sample[task]
        channels = deep[0][task].shape[1]
        _show(row[0], colorize_label(task, target, channels), size)
        row[0].set_ylabel(task, fontsize=10)
        row[0].set_title("ground truth", fontsize=9)
        maps = [(f"1/{size[0] // scale[task].shape[-2]}", scale[task][0]) for scale in deep]
        if has_final:
            maps.append(("final", outputs[task][0]) if task in outputs else ("(auxiliary: none)", None))
        for ax, (name, pred) in zip(row[1:], maps, strict=True):
            if pred is None:
                ax.set_axis_off()
                ax.set_title(name, fontsize=8)
                continue
            _show(ax, colorize_prediction(task, pred, target), size)
            ax.set_title(f"{name}: err {_mean(error_map(task, pred, target)):.3g}", fontsize=8)
    fig.suptitle("Initial task predictions per scale (deep supervision), finest to coarsest, then the final",
                 fontsize=10)
    fig.tight_layout()
    plots.save_figure(fig, save_to)
    return fig


def _attention(outputs: dict) -> list[dict]:
    """[{target: {source: gate (1, C, h, w)}} per scale]: MTI-Net has a list, PAD-Net one dict at the
    backbone's finest scale."""
    gates = (outputs.get("features") or {}).get("attention") or []
    return [gates] if isinstance(gates, dict) else [g for g in gates if g]


def attention_table(outputs: dict, image_size=None) -> pd.DataFrame:
    """The mean distillation gate sigmoid(conv(F_source)) per (target ← source) pair and scale, in [0, 1]:
    how much of each message a task lets in (0.5 is what an untrained gate gives)."""
    gates = _attention(outputs)
    if not gates:
        raise ValueError("attention_table: this model has no distillation attention")
    rows = {}
    for scale in gates:
        stride = _stride(scale, image_size)
        for target, sources in scale.items():
            for source, gate in sources.items():
                rows.setdefault(f"{target} ← {source}", {})[stride] = float(gate[0].float().mean())
    return pd.DataFrame(rows).T.rename_axis("target ← source")


def _stride(scale: dict, image_size) -> str:
    gate = next(iter(next(iter(scale.values())).values()))
    h = gate.shape[-2]
    return f"1/{image_size[0] // h}" if image_size else f"{h}×{gate.shape[-1]}"


def attention_figure(outputs: dict, image_size=None, save_to=None):
    """The distillation gates, averaged over channels: one row per (target ← source) pair, one column
    per scale. Bright = the target lets the source's message in at that place."""
    gates = _attention(outputs)
    if not gates:
        raise ValueError("attention_figure: this model has no distillation attention (out['features'])")
    pairs = [(t, s) for t, sources in gates[0].items() for s in sources]
    fig, axes = plt.subplots(len(pairs), len(gates), figsize=(1.7 * len(gates) + 1.6, 1.5 * len(pairs)),
                             squeeze=False)
    for col, scale in enumerate(gates):
        for row, (target, source) in enumerate(pairs):
            ax = axes[row, col]
            gate = scale[target][source][0].float().mean(0).numpy()
            im = ax.imshow(gate, vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{_stride(scale, image_size) if row == 0 else ''} mean {gate.mean():.2f}".strip(),
                         fontsize=8)
            if col == 0:
                ax.set_ylabel(f"{target} ← {source}", fontsize=8)
    fig.colorbar(im, ax=axes, fraction=0.03, pad=0.02).set_label("gate (mean over channels)", fontsize=8)
    plots.save_figure(fig, save_to)
    return fig


def detections(outputs: dict, det_classes=(), score_thresh: float = 0.3, max_boxes: int = 10) -> pd.DataFrame:
    """The detector's boxes for the image after NMS (models.detection.postprocess), best first:
    class, score and xyxy pixels; at most `max_boxes` with a score of at least `score_thresh`."""
    from .models.detection import postprocess

    found = postprocess(outputs["detection"], score_thresh=score_thresh, max_detections=max_boxes)[0]
    labels = found["labels"].tolist()
    names = [det_classes[k] if k < len(det_classes) else str(k) for k in labels]
    boxes = found["boxes"].numpy().reshape(-1, 4)
    return pd.DataFrame({"class": names, "label": labels, "score": found["scores"].numpy(),
                         "x0": boxes[:, 0], "y0": boxes[:, 1], "x1": boxes[:, 2], "y1": boxes[:, 3]})


def detection_figure(sample: dict, outputs: dict, det_classes=(), classes=(), scene_classes=(),
                     score_thresh: float = 0.3, save_to=None):
    """ROCK's primary task and its image-level auxiliary task: the ground-truth boxes, the detections
    with their scores, and the scene probabilities (when the model predicts the scene). When no box
    reaches `score_thresh` (an untrained or very short run), the 3 best are drawn dashed instead."""
    size = _size(sample)
    has_scene = "scene" in outputs
    fig, axes = plt.subplots(1, 2 + has_scene, figsize=(3.3 * (2 + has_scene), 3.3 * size[0] / size[1] + 0.4))
    image = plots._image(sample["image"])
    for ax in axes[:2]:
        _show(ax, image, size)
    plots.draw_boxes(axes[0], sample.get("boxes", torch.zeros(0, 4)), sample.get("labels", torch.zeros(0)),
                     det_classes, classes)
    axes[0].set_title(f"ground truth: {len(sample.get('labels', []))} boxes", fontsize=9)
    found = detections(outputs, det_classes, score_thresh)
    dashed = found.empty
    if dashed:
        found = detections(outputs, det_classes, score_thresh=0.0, max_boxes=3)
    for _, box in found.iterrows():
        colour = plots._box_colour(box["class"], classes)
        axes[1].add_patch(Rectangle((box["x0"] - 0.5, box["y0"] - 0.5), box["x1"] - box["x0"],
                                    box["y1"] - box["y0"], fill=False, lw=1.2, ec=colour,
                                    ls="--" if dashed else "-"))
        axes[1].text(box["x0"] - 0.5, box["y0"] - 0.5, f"{box['class']} {box['score']:.2f}", fontsize=6,
                     va="top", color="black", clip_on=True,
                     bbox={"facecolor": colour, "alpha": 0.8, "pad": 0.5, "lw": 0})
    axes[1].set_title(f"no box ≥ {score_thresh:g}: best 3 (dashed)" if dashed
                      else f"{len(found)} detections ≥ {score_thresh:g}", fontsize=9)
    if has_scene:
        probs = outputs["scene"][0].float().softmax(0).numpy()
        names = list(scene_classes) if len(scene_classes) == len(probs) else list(map(str, range(len(probs))))
        truth = int(sample["scene"]) if "scene" in sample else -1
        colours = ["seagreen" if k == truth else "lightgrey" for k in range(len(probs))]
        axes[2].barh(names, probs, color=colours)
        axes[2].invert_yaxis()
        axes[2].set_xlim(0, 1)
        axes[2].tick_params(labelsize=7)
        truth_name = names[truth] if truth >= 0 else "missing"
        axes[2].set_title(f"scene: {names[int(probs.argmax())]} (label: {truth_name}, green)", fontsize=9)
    fig.tight_layout()
    plots.save_figure(fig, save_to)
    return fig


def available_views(outputs: dict, sample: dict) -> list[str]:
    """The views that apply to a model, judged from its outputs (any model family of the registry)."""
    views = []
    if _dense_tasks(sample, outputs):
        views.append("predictions")
    if outputs.get("deep"):
        views.append("per-scale predictions")
    if _attention(outputs):
        views.append("distillation attention")
    if "detection" in outputs:
        views.append("detections")
    return views


def render_view(view: str, sample: dict, outputs: dict, dataset=None, save_to=None):
    """The figure of one of VIEWS; `dataset` supplies the class names (semseg, detection, scene)."""
    if view == "predictions":
        return prediction_figure(sample, outputs, save_to=save_to)
    if view == "per-scale predictions":
        return deep_predictions_figure(sample, outputs, save_to=save_to)
    if view == "distillation attention":
        return attention_figure(outputs, _size(sample), save_to=save_to)
    if view == "detections":
        return detection_figure(sample, outputs, _classes(dataset, "det_classes"),
                                _classes(dataset, "classes"), _classes(dataset, "scene_classes"),
                                save_to=save_to)
    raise ValueError(f"view={view!r}: choose from {list(VIEWS)}")


# ---------------------------------------------------------------- the widget


def run_labels(table: pd.DataFrame) -> dict[str, str]:
    """{run: label} for the drop-down: the model and tasks, then every config field in which this run
    differs from another stored run of the same model (so no two labels read alike)."""
    from dataclasses import fields

    config_fields = [f.name for f in fields(TrainConfig)
                     if f.name in table and f.name not in ("model", "tasks")]
    labels = {}
    for _, group in table.groupby("model", sort=False):
        varying = [c for c in config_fields
                   if len({json.dumps(_plain(v), sort_keys=True, default=str) for v in group[c]}) > 1]
        for _, row in group.iterrows():
            parts = [row["model"], "+".join(row["tasks"])]
            parts += [f"{c}={_short(row[c])}" for c in varying]
            labels[row["run"]] = " · ".join(parts) + f" — {row['run']}"
    return labels


def _plain(value):
    # pandas turns None into NaN, JSON turns tuples into lists: compare what they stand for
    if isinstance(value, float) and math.isnan(value):
        return None
    return list(value) if isinstance(value, tuple) else value


def _short(value) -> str:
    value = _plain(value)
    if isinstance(value, list):
        return "+".join(map(str, value)) if all(not isinstance(v, list | dict) for v in value) else str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def run_inspector(table: pd.DataFrame, initial: str | None = None, image: int = 0, root=None):
    """Pick a stored complete run, a validation image and a view; the figure below follows the choice.

    Models and validation sets are loaded on first use and kept (`open_run`). Any error
    while loading or drawing (e.g. a run on a real dataset that is not on this machine) is printed in
    the output area instead of breaking the widget.
    """
    import ipywidgets as ipw

    if "status" in table:
        table = table[table["status"] == "complete"]
    if table.empty:
        raise ValueError("run_inspector: no complete stored run (train one with experiments.run_variants)")
    names, labels = list(table["run"]), run_labels(table)
    run = ipw.Dropdown(options=[(labels[name], name) for name in names],
                       value=initial if initial in names else names[0], description="run",
                       layout=ipw.Layout(width="95%"))
    index = ipw.IntSlider(value=image, min=0, max=max(image, 0), description="image", continuous_update=False)
    view = ipw.Dropdown(options=list(VIEWS), description="view")
    figure, message = ipw.Image(format="png"), ipw.HTML()
    updating = [False]  # set while the controls are adjusted to a new run: no redraw per adjustment

    def draw(_change=None) -> None:
        if updating[0]:
            return
        try:
            _, model, dataset = open_run(run.value, root)
            updating[0] = True
            index.max = len(dataset) - 1
            sample = dataset[index.value]
            outputs = predict(model, sample)
            views = available_views(outputs, sample)
            view.options = views
            view.value = view.value if view.value in views else views[0]
            updating[0] = False
            figure.value = plots.figure_png(render_view(view.value, sample, outputs, dataset))
            message.value = ""
        except Exception as exc:  # noqa: BLE001 -- a run that cannot be shown must not break the widget
            updating[0] = False
            text = f"cannot show {run.value}: {type(exc).__name__}: {exc}"
            message.value = f"<pre>{html.escape(text)}</pre>"

    for control in (run, index, view):
        control.observe(draw, names="value")
    draw()
    return ipw.VBox([run, ipw.HBox([index, view]), message, figure])
