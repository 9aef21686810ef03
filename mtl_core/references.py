"""Reference rows that make a metric readable: what a predictor that never looks at the image scores.

    trivial_metrics(train_set, val_set, ("semseg", "depth", "normals", "edge"))
    # {"semseg": {"miou": 9.6, ...}, "depth": {"rmse": 1.035, ...}, ...}

A trained network is only as good as its margin over these. Each trivial predictor is fitted on the
training split (per pixel where the task is a map, since room layouts make position informative) and
scored on the validation split by the same meters as the networks (`metrics.MetricSuite`):
- semseg / human parts: the most frequent class of each pixel position (a per-pixel class prior);
- depth: the mean training depth of each pixel position;
- normals: the mean training normal of each pixel position (normalised);
- edge / saliency: the training frequency of an edge (salient) pixel at each position, as a probability;
- scene: the most frequent scene class;
- detection: for every class, its mean training box (xyxy), scored by the class's share of the
  training boxes — the same boxes on every image, so mAP measures only where objects usually are.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .metrics import MetricSuite
from .tasks import make_tasks

TRIVIAL = {"semseg": "per-pixel class prior", "human_parts": "per-pixel class prior",
           "depth": "per-pixel mean depth", "normals": "per-pixel mean normal",
           "edge": "per-pixel edge frequency", "sal": "per-pixel saliency frequency",
           "scene": "most frequent scene", "detection": "per-class mean training box"}


def _statistics(dataset, tasks: Iterable[str]) -> dict[str, torch.Tensor]:
    """Per-pixel sums over the training split, counting only annotated pixels (detection: per-class box
    sums)."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, torch.Tensor] = {}
    for i in range(len(dataset)):
        item = dataset[i]
        for task in tasks:
            if task == "detection":  # boxes: per-class sums of xyxy and counts
                boxes, labels = item["boxes"].float().reshape(-1, 4), item["labels"].long()
                sums.setdefault("detection", {})
                for box, c in zip(boxes, labels.tolist(), strict=True):
                    total, n = sums["detection"].get(c, (torch.zeros(4), 0))
                    sums["detection"][c] = (total + box, n + 1)
                continue
            label = item[task]
            if task in ("semseg", "human_parts"):
                classes = len(dataset.classes) if task == "semseg" else len(dataset.part_classes)
                valid = label != 255
                value = torch.nn.functional.one_hot(torch.where(valid, label, 0).long(), classes)
                value = value.movedim(-1, 0).float() * valid
            elif task == "scene":
                if int(label) < 0:
                    continue
                value = torch.nn.functional.one_hot(torch.as_tensor(label).long(), len(dataset.scene_classes))
                value = value.float()
            elif task == "depth":
                value = label.float() * (label > 0)
                counts[task] = counts.get(task, 0) + (label > 0).float()
            elif task == "normals":
                value = label.float()
                counts[task] = counts.get(task, 0) + (label.abs().sum(0, keepdim=True) > 0).float()
            else:  # edge, sal: 0 / 1 maps, 255 = ignore
                valid = label != 255
                value = label.float() * valid
                counts[task] = counts.get(task, 0) + valid.float()
            sums[task] = sums.get(task, 0) + value
    means = {}
    for task, total in sums.items():
        if task == "detection":  # {class: (mean box, share of the training boxes)}
            n_boxes = sum(n for _, n in total.values())
            means[task] = {c: (box / n, n / n_boxes) for c, (box, n) in sorted(total.items())}
            continue
        means[task] = total / counts[task].clamp_min(1) if task in counts else total
    return means


class TrivialPredictor(torch.nn.Module):
    """The trivial predictors (module doc) as a model: whatever the images, the same outputs, in the
    format of a network's (`{task: (N, C, H, W) or (N, C)}`; detection: one decoded box list per image).
    As a model it can be scored like any network, e.g. on bootstrap resamples (`bootstrap.ImageMetrics`)."""

    def __init__(self, train_set, tasks: Iterable[str]):
        super().__init__()
        tasks = tuple(tasks)
        unsupported = [t for t in tasks if t not in TRIVIAL]
        if unsupported:
            raise ValueError(f"tasks: no trivial predictor for {unsupported}; supported: {list(TRIVIAL)}")
        keys = set(train_set[0]) if len(train_set) else set()
        missing = [t for t in tasks if ("boxes" if t == "detection" else t) not in keys]
        if missing:
            raise ValueError(f"tasks: the training split annotates no {missing}")
        self.outputs = {}
        for task, mean in _statistics(train_set, tasks).items():
            if task == "detection":  # one box per class, the same on every image (DetectionMeter's format)
                classes = list(mean)
                boxes = torch.stack([mean[c][0] for c in classes]) if classes else torch.zeros(0, 4)
                self.outputs[task] = {"boxes": boxes, "scores": torch.tensor([mean[c][1] for c in classes]),
                                      "labels": torch.tensor(classes, dtype=torch.long)}
            elif task in ("semseg", "human_parts", "scene"):
                self.outputs[task] = torch.log(mean + 1e-6)  # logits whose argmax is the most frequent class
            elif task in ("edge", "sal"):
                self.outputs[task] = torch.logit(mean.clamp(1e-4, 1 - 1e-4))  # the meters apply a sigmoid
            else:
                self.outputs[task] = mean
        self.specs = make_tasks(tasks, dataset=train_set)

    def forward(self, images: torch.Tensor) -> dict:
        n = len(images)
        return {t: [o] * n if t == "detection" else o.expand(n, *o.shape) for t, o in self.outputs.items()}

    def metrics(self, val_set, protocol: str = "default", batch_size: int = 32) -> dict[str, dict]:
        """{task: metrics} on `val_set`, by the networks' meters (`metrics.MetricSuite`)."""
        from .data.collate import collate_batch

        suite = MetricSuite(self.specs, protocol=protocol)
        for start in range(0, len(val_set), batch_size):
            batch = collate_batch([val_set[i] for i in range(start, min(start + batch_size, len(val_set)))])
            suite.update(self(batch["image"]), batch)
        return suite.compute()


def trivial_metrics(train_set, val_set, tasks: Iterable[str], protocol: str = "default",
                    batch_size: int = 32) -> dict[str, dict[str, float]]:
    """{task: metrics} of the trivial predictors (module doc) fitted on `train_set`, scored on `val_set`."""
    return TrivialPredictor(train_set, tasks).metrics(val_set, protocol, batch_size)
