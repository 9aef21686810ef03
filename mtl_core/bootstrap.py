"""A paired bootstrap over the validation images for the dense studies: the noise of a one-seed result.

    scores = ImageMetrics(model, val, specs, protocol)   # the network runs once, over every image
    scores.compute()                                     # {task: {metric: value}} on the validation set
    counts = resample_counts(len(val), 200, seed)        # (200, N): how often each image is drawn
    scores.compute(counts[0])                            # the same metrics on the first resample

    boot = DenseBootstrap(200)                           # the same, for stored runs
    boot.metrics(result)                                 # {task: (200,) primary metric}
    deltas = boot.deltas(results, singles, tasks)        # {variant: {"Δm": (200,), task: (200,)}}
    significance.compare([dm_a], [dm_b], "A", "B", boot_a=deltas["A"]["Δm"], boot_b=deltas["B"]["Δm"])
    verdict([dm_a], [dm_b], "A", "B", deltas["A"]["Δm"], deltas["B"]["Δm"])  # the same, as notebooks call it

One seed measures no spread over training runs; what it can still measure is how much a number depends on
which validation images were drawn. `ImageMetrics` predicts every validation image once and keeps, per
image, what each task's meter accumulates over a split (metrics.py): its sums and counts (confusion
matrix, squared errors, edge counts per threshold, ...) and its lists (the normals' angles). A metric
on a resample is the meter's own compute() on those sums weighted by how often each image was drawn and
those lists repeated as often: exactly what evaluating the drawn images would give, so it is a bootstrap
of the pooled metric (mIoU, RMSE, ...), not of a mean of per-image scores. Every network compared is
scored on the same resamples (`resample_counts` with one seed), so that gaps are computed image set by
image set. It covers the choice of images only, not training noise: another seed can move a network by
more. detection_study.MapBootstrap does the same for mAP, which is no sum of per-image counts.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from . import significance
from .metrics import DetectionMeter, Meter, delta_m, make_meter, primary_metrics
from .runs import RunResult
from .tasks import TaskSpec, make_tasks
from .train import eval_protocol, make_dataset

# the config fields that decide which validation images a run was scored on
_VALIDATION_FIELDS = ("dataset", "data_dir", "dataset_options", "size", "num_val", "val_domain", "data_seed",
                      "missing_fraction")


def resample_counts(n: int, bootstrap: int, seed: int = 0) -> np.ndarray:
    """(bootstrap, n) int64 counts: how often each of n items (validation images, measurement steps) is
    drawn in each resample with replacement. The same (n, bootstrap, seed) give the same resamples: use
    one for everything compared, so that the replicates are paired."""
    if not bootstrap:
        return np.zeros((0, n), dtype=np.int64)
    rng = np.random.default_rng(seed)
    counts = [np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(bootstrap)]
    return np.stack(counts).astype(np.int64)


def _state(meter: Meter, fresh: dict) -> dict:
    """The meter's accumulators after an update: its numbers, tensors and lists that differ from a fresh
    meter's (`fresh`: vars of one). Found by comparison rather than listed per meter, so that a new
    meter or protocol is pooled without a table to keep up to date; settings (thresholds, class count)
    are never changed by an update, and an accumulator no image changed keeps its fresh value."""
    def changed(key, value):
        before = fresh.get(key)
        if isinstance(value, torch.Tensor):
            return not (isinstance(before, torch.Tensor) and torch.equal(value, before))
        return value != before
    return {k: v for k, v in vars(meter).items()
            if isinstance(v, int | float | torch.Tensor | list) and changed(k, v)}


class _Pooled:
    """One task's per-image meter states, and its meter on any resample: sums and counts are the
    per-image ones weighted by how often each image was drawn, lists the per-image lists repeated as
    often (every meter's compute() reduces them order-free: mean, median, shares)."""

    def __init__(self, make: Callable[[], Meter], states: list[dict]):
        self.make = make
        fresh = vars(make())
        self.lists, self.tensors, self.numbers = {}, {}, {}
        for key in sorted({k for s in states for k in s}):
            empty = fresh[key]
            per_image = [s.get(key, empty) for s in states]
            if isinstance(empty, list):
                self.lists[key] = per_image
            elif isinstance(empty, torch.Tensor):
                # counts stay exact in int64; float sums are weighted in float64, cast back afterwards
                wide = torch.float64 if empty.is_floating_point() else torch.int64
                self.tensors[key] = (empty.dtype, torch.stack(per_image).to(wide))
            else:  # a count stays an exact int; a sum of errors is weighted as a float
                kind = float if any(isinstance(v, float) for v in [empty, *per_image]) else int
                wide = np.float64 if kind is float else np.int64
                self.numbers[key] = (kind, np.array(per_image, dtype=wide))

    def meter(self, counts: np.ndarray) -> Meter:
        meter = self.make()
        for key, per_image in self.lists.items():
            repeated = [x for k, xs in zip(counts, per_image, strict=True) for _ in range(k) for x in xs]
            setattr(meter, key, repeated)
        weights = torch.from_numpy(counts)
        for key, (dtype, stacked) in self.tensors.items():
            setattr(meter, key, torch.tensordot(weights.to(stacked.dtype), stacked, dims=1).to(dtype))
        for key, (kind, stacked) in self.numbers.items():
            setattr(meter, key, kind(counts @ stacked))
        return meter


class ImageMetrics:
    """A network's metrics on any resample of a validation set, from one pass over it.

    Per image, the state each task's meter accumulates (module docstring); `compute(counts)` pools it
    with counts[i] copies of image i and calls each meter's compute(), as `MetricSuite` would on those
    images. Every task with a meter of sums, counts or lists: the dense tasks and scene; detection's mAP
    ranks the detections of all images together and is refused. Tasks the model has no output for (an
    auxiliary task supervised only through out["deep"]) are left out, as in `MetricSuite`; `tasks`
    holds the ones scored."""

    @torch.no_grad()
    def __init__(self, model: torch.nn.Module, dataset: Sequence[dict], tasks: Mapping[str, TaskSpec],
                 protocol: str = "default", batch_size: int = 32):
        from .data import collate_batch

        makers = {t: functools.partial(make_meter, spec, protocol) for t, spec in tasks.items()}
        fresh = {t: dict(vars(make())) for t, make in makers.items()}
        for t, make in makers.items():
            if isinstance(make(), DetectionMeter):
                raise ValueError(f"task {t!r}: mAP is no sum of per-image counts "
                                 "(detection_study.MapBootstrap resamples it)")
        states: dict[str, list[dict]] = {t: [] for t in tasks}
        model.eval()
        for start in range(0, len(dataset), batch_size):
            batch = collate_batch([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            outputs = model(batch["image"])
            for i in range(len(batch["image"])):
                one = {k: v[i:i + 1] for k, v in batch.items() if isinstance(v, torch.Tensor)}
                for t in outputs.keys() & states.keys():
                    meter = makers[t]()  # a new meter per image: its state is that image's alone
                    meter.update(outputs[t][i:i + 1], one)
                    states[t].append(_state(meter, fresh[t]))
        self.protocol, self.num_images = protocol, len(dataset)
        self.tasks = {t: spec for t, spec in tasks.items() if states[t]}
        self._pooled = {t: _Pooled(makers[t], states[t]) for t in self.tasks}

    def compute(self, counts: Sequence[int] | np.ndarray | None = None) -> dict[str, dict[str, float]]:
        """{task: {metric: value}} on the images taken counts[i] times each (None: each once)."""
        counts = np.ones(self.num_images, dtype=np.int64) if counts is None else np.asarray(counts, np.int64)
        if counts.shape != (self.num_images,) or (counts < 0).any():
            raise ValueError(f"counts: one per image ({self.num_images}), none negative; got {counts}")
        return {t: pooled.meter(counts).compute() for t, pooled in self._pooled.items()}


class DenseBootstrap:
    """Paired bootstrap of the primary metrics of dense (and image-level) tasks over the validation
    images, for variants trained with one seed: `ImageMetrics` of each stored run on the same
    `replicates` resamples (`resample_counts` seeded by `seed`). Every run scored by one instance must
    have been validated on the same images (a different validation config is refused). Results are
    cached per run."""

    def __init__(self, replicates: int, seed: int = 0, batch_size: int = 32):
        if replicates < 1:
            raise ValueError(f"replicates={replicates}: at least 1")
        self.replicates, self.seed, self.batch_size = int(replicates), seed, batch_size
        self.resamples: np.ndarray | None = None  # (replicates, images) counts, drawn with the first run
        self._validation: str | None = None
        self._cache: dict[str, dict[str, np.ndarray]] = {}

    def metrics(self, result: RunResult) -> dict[str, np.ndarray]:
        """{task: (replicates,) primary metric} of one stored run on the resampled validation images."""
        key = str(result.directory)
        if key in self._cache:
            return self._cache[key]
        config = result.config
        validation = json.dumps({f: config.to_dict()[f] for f in _VALIDATION_FIELDS}, sort_keys=True,
                                default=list)
        if self._validation not in (None, validation):
            raise ValueError(f"{result.directory.name}: validated on other images than the runs before it; "
                             "a paired bootstrap needs one validation set (use another DenseBootstrap)")
        val = make_dataset(config, "val", config.val_domain)
        if self.resamples is None:
            self._validation = validation
            self.resamples = resample_counts(len(val), self.replicates, self.seed)
        scores = ImageMetrics(result.load_model(), val, make_tasks(config.tasks, dataset=val),
                              eval_protocol(config), self.batch_size)
        primary = primary_metrics(scores.tasks, scores.protocol)
        resampled = [scores.compute(counts) for counts in self.resamples]
        values = {t: np.array([np.mean([r[t][name] for name in primary[t]]) for r in resampled])
                  for t in scores.tasks}
        self._cache[key] = values
        return values

    def deltas(self, results: Mapping[str, list[RunResult]], single_task: Mapping[str, list[RunResult]],
               tasks: Iterable[str]) -> dict[str, dict[str, np.ndarray]]:
        """{variant: {"Δm": (replicates,), task: (replicates,)}}: Δm and each task's term (%) against the
        single-task networks on the same resampled images (experiments.delta_m_table's formula), for
        the one-seed variants; NaN in a replicate where a single-task metric is 0."""
        tasks = tuple(tasks)
        specs = make_tasks(tasks)
        if any(len(single_task[t]) != 1 for t in tasks):
            return {}  # several single-task seeds: the verdicts use Welch's t over seeds
        base = {t: self.metrics(single_task[t][0])[t] for t in tasks}
        protocol = eval_protocol(single_task[tasks[0]][0].config)
        primary = primary_metrics(specs, protocol)
        out = {}
        for label, runs in results.items():
            if len(runs) != 1:
                continue
            mine = self.metrics(runs[0])
            per_task = {t: np.array([self._delta({t: mine[t][r]}, {t: base[t][r]}, {t: specs[t]}, primary)
                                     for r in range(self.replicates)]) for t in tasks}
            out[label] = {"Δm": np.mean([per_task[t] for t in tasks], axis=0), **per_task}
        return out

    @staticmethod
    def _delta(value, reference, specs, primary) -> float:
        names = {t: primary[t] for t in specs}
        try:
            return delta_m({t: {names[t][0]: v} for t, v in value.items()},
                           {t: {names[t][0]: v} for t, v in reference.items()}, specs, names)
        except ValueError:  # a zero single-task metric (an untrained network): no relative change
            return math.nan


def verdict(a: Sequence[float], b: Sequence[float], name_a: str, name_b: str,
            boot_a: Sequence[float] | None = None, boot_b: Sequence[float] | None = None,
            higher_is_better: bool = True) -> significance.Verdict | None:
    """`significance.compare` of the per-seed values `a` vs `b` (Δm, a task's Δ or a metric), with the
    bootstrap replicates of both (`DenseBootstrap.deltas` or `.metrics`; None with several seeds).
    None when a per-seed value is not finite (a Δ against a single-task metric of 0, as in the ci
    profile's untrained networks). The replicates are used only when both sides have them, every one
    finite; otherwise a one-seed gap reads "no spread measured". With several seeds on both sides the
    rule is Welch's t over the seeds and the replicates play no part. A side that is one exact value
    repeated (a reference) raises no scipy warning about identical data."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    usable = (boot_a is not None and boot_b is not None
              and np.isfinite(np.asarray(boot_a, dtype=float)).all()
              and np.isfinite(np.asarray(boot_b, dtype=float)).all())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        return significance.compare(a, b, name_a, name_b, higher_is_better,
                                    boot_a=boot_a if usable else None, boot_b=boot_b if usable else None)
