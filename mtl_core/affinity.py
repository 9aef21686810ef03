"""Task affinity per scale: the measurements behind MTI-Net's motivation (Sec. 3.1, Fig. 2).

MTI-Net argues that tasks that are close at one scale of the network can be far apart at another,
so a model should let tasks interact at every scale. Three ways to measure "close":

1. Representation similarity analysis (RSA; Dwivedi & Roig 2019, used by MTI-Net): train one
   single-task network per task; feed all of them the same K images; at each scale s build each
   task's representational dissimilarity matrix RDM_t^s[i, j] = 1 - pearson(f_t^s(x_i), f_t^s(x_j))
   over the flattened features; two tasks are similar at scale s when their RDMs agree, measured by
   Spearman's rank correlation of the RDMs' upper triangles. Bootstrap over images gives intervals.
2. Gradient affinity: during multi-task training, the cosine between the gradients of two task
   losses with respect to the shared parameters of one scale (`scale_parameter_groups`: on a
   sequential backbone the stage that produces it, on `hrnet` the branch at that resolution).
   cos > 0: a step for one task also helps the other there; cos < 0: they conflict (PCGrad's
   "conflicting gradients").
3. Lookahead affinity (TAG, Fifty et al. 2021): take a step on one scale's shared parameters
   with task i's gradient alone and see how task j's loss on the same batch changes:
   Z_{i->j} = 1 - L_j(theta - eta * g_i) / L_j(theta). Positive: i's update helps j.
   TAG's eta is the learning rate of plain SGD. With Adam-sized learning rates (1e-3) and raw
   gradients a step changes a loss by ~1e-7 relative -- float32 rounding noise. By default the step
   here therefore has a fixed size relative to the scale's weights, eta * g_i = step * |theta| * g_i / |g_i|
   (step = 1e-3): every task takes a step of the same length, so Z compares directions and
   curvature, not gradient magnitudes. A step is small enough when each task's own update lowers
   its own loss (Z_{i->i} > 0; the notebook checks it: with 1e-2, the finest-scale steps raised every
   loss on the quick profile, then on the `cnn` backbone). `lookahead_lr` restores TAG's plain SGD step.

Each measure is read against references measured the same way. RSA: a floor, the RSA between the
untrained single-task networks (`initial_model`: what architecture and initialisation alone make alike),
and a ceiling, the RSA between one task's networks trained with two seeds; `rsa_references` places each
pair between them by a paired bootstrap over the same resampled images. Gradient cosine: each task's
cosine with itself on two batches at the same parameters, the batch-noise reference (`cosine_references`).

What affinity is for (section 5): choosing which tasks share a network (Standley et al. 2020; TAG):
`pair_splits` enumerates the groupings, `split_scores` sums the within-group affinities, and
`best_split` compares the grouping the affinities choose with the one measured Δm prefers (trained
networks scored on resampled validation images: `bootstrap.ImageMetrics`).

Scales are indexed s = 0 (the backbone's finest map) ... 3 (its coarsest), as the backbone returns
them; what stride a scale has depends on the backbone (`backbone.strides`: [2, 4, 8, 16] for `hrnet`
at its default stem, [4, 8, 16, 32] for `cnn`), so the figures and `scale_name` take the strides
from the caller instead of assuming them.

The probe for (2) and (3) runs inside the ordinary training loop (`fit(..., step_callback=probe)`).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

from .bootstrap import resample_counts
from .data.cache import atomic_write, file_lock
from .losses import task_losses
from .models import build_model
from .plots import save_figure
from .runs import config_hash, default_runs_root
from .significance import compare
from .tasks import make_tasks
from .train import TrainConfig, fit, init_seed, make_dataset, seed_everything, validate

# ----------------------------------------------------------------------------------------------
# 1. representation similarity analysis


@torch.no_grad()
def scale_features(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 32) -> list[np.ndarray]:
    """The backbone's feature maps of `images` in the backbone's order (finest first: index s is the map
    at `backbone.strides[s]`), flattened per image: [(K, C_s * H_s * W_s)] per scale."""
    model.eval()
    chunks = [model.backbone(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return [torch.cat([c[s] for c in chunks]).flatten(1).float().numpy() for s in range(len(chunks[0]))]


def rdm(features: np.ndarray) -> np.ndarray:
    """Representational dissimilarity matrix: 1 - Pearson correlation between every pair of images."""
    return 1.0 - np.corrcoef(features)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = rankdata(a), rankdata(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def _resampled_pairs(k: int, images: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the RDM entries a resample `images` compares: the strict upper triangle
    of the resampled matrix, without pairs of a resampled image with itself (their dissimilarity is 0 by
    construction and would only add ties)."""
    idx = np.arange(k) if images is None else np.asarray(images)
    i, j = np.triu_indices(len(idx), 1)
    keep = idx[i] != idx[j]
    a, b = idx[i][keep], idx[j][keep]
    # always the upper-triangle entry: an RDM from float32 features is not exactly symmetric, and a pair
    # drawn twice must read one value twice (a tie), whatever order the resample lists its images in
    return np.minimum(a, b), np.maximum(a, b)


def _pair_similarities(rdms: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]],
                       images: np.ndarray | None = None) -> np.ndarray:
    """Spearman correlation of the RDMs of each pair in `pairs` over the resample `images`: every
    network's entries are ranked once, then each pair is the Pearson correlation of two rank vectors."""
    k = next(iter(rdms.values())).shape[0]
    rows, cols = _resampled_pairs(k, images)
    ranks = {name: rankdata(m[rows, cols]) for name, m in rdms.items()}
    return np.array([np.corrcoef(ranks[a], ranks[b])[0, 1] for a, b in pairs])


def rdm_similarity(rdms: Mapping[str, np.ndarray], images: np.ndarray | None = None) -> pd.DataFrame:
    """Spearman correlation between the tasks' RDMs (upper triangles), optionally restricted to a
    resample `images` of image indices (pairs of a resampled image with itself are left out)."""
    tasks = list(rdms)
    pairs = list(itertools.combinations(tasks, 2))
    matrix = pd.DataFrame(np.eye(len(tasks)), index=tasks, columns=tasks)
    for (a, b), v in zip(pairs, _pair_similarities(rdms, pairs, images), strict=True):
        matrix.loc[a, b] = matrix.loc[b, a] = v
    return matrix


def rsa_per_scale(models: Mapping[str, torch.nn.Module], images: torch.Tensor, bootstrap: int = 200,
                  seed: int = 0, confidence: float = 0.95, pairs: Sequence[tuple[str, str]] | None = None,
                  replicates: bool = False) -> pd.DataFrame:
    """RSA between networks at every scale, with bootstrap intervals over the images.

    Returns one row per (scale, pair): `rsa` (on all K images), `low` / `high` (percentile interval of
    `bootstrap` resamples of the images). `pairs`: the (name, name) pairs of `models` to compare (default:
    every two); `replicates`: also a column `replicates` with each pair's `bootstrap` resampled values.
    The resamples depend only on (K, `bootstrap`, `seed`): calls on the same images with the same two
    numbers resample the same images, so their replicates are paired (`rsa_references` relies on it).
    """
    names = list(models)
    pairs = list(itertools.combinations(names, 2)) if pairs is None else [tuple(p) for p in pairs]
    unknown = sorted({n for p in pairs for n in p} - set(names))
    if unknown:
        raise ValueError(f"pairs: {unknown} are not among the models {names}")
    used = list(dict.fromkeys(n for p in pairs for n in p))
    features = {n: scale_features(models[n], images) for n in used}
    num_scales = len(features[used[0]])
    resamples = [np.repeat(np.arange(len(images)), c) for c in resample_counts(len(images), bootstrap, seed)]
    alpha = (1 - confidence) / 2
    rows = []
    for s in range(num_scales):
        rdms = {n: rdm(f[s]) for n, f in features.items()}
        full = _pair_similarities(rdms, pairs)
        boots = (np.array([_pair_similarities(rdms, pairs, r) for r in resamples]) if bootstrap
                 else np.empty((0, len(pairs))))
        for p, (a, b) in enumerate(pairs):
            row = {"scale": s, "task_a": a, "task_b": b, "rsa": full[p],
                   "low": np.quantile(boots[:, p], alpha) if bootstrap else np.nan,
                   "high": np.quantile(boots[:, p], 1 - alpha) if bootstrap else np.nan}
            if replicates:
                row["replicates"] = boots[:, p]
            rows.append(row)
    return pd.DataFrame(rows)


def initial_model(config: TrainConfig) -> torch.nn.Module:
    """The network a run of `config` starts from, never trained: built as `fit` builds it, under the same
    initial seed (`train.init_seed`, a function of the seed and the tasks). The single-task networks'
    starting points are the floor of RSA: what architecture and initialisation alone make alike."""
    tasks = make_tasks(config.tasks, dataset=make_dataset(config, "val", config.val_domain),
                       weights=config.loss_weights)
    seed_everything(init_seed(config))
    model = build_model(config.model, tasks, backbone=config.backbone,
                        backbone_options=config.backbone_options, **config.model_options)
    return model.eval()


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not values.size:
        return np.nan, np.nan
    alpha = (1 - confidence) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def _boot(values) -> np.ndarray | None:
    """Bootstrap replicates for `significance.compare`, None when there are none (bootstrap=0)."""
    values = np.asarray(values, dtype=float)
    return values if values.size else None


def _scale_mean(table: pd.DataFrame, s: int) -> tuple[float, np.ndarray]:
    part = table[table["scale"] == s]
    if part.empty:
        raise ValueError(f"scale {s}: no reference row")
    return float(part["rsa"].mean()), np.mean(np.stack(list(part["replicates"])), axis=0)


def rsa_references(rsa: pd.DataFrame, untrained: pd.DataFrame, same_task: pd.DataFrame,
                   confidence: float = 0.95) -> pd.DataFrame:
    """Each task pair's RSA placed between two references at its scale.

    floor: the mean RSA between untrained networks (each task's single-task network at its initial
    weights, `initial_model`): what architecture and initialisation alone give. ceiling: the mean RSA
    between two trainings of the same task (seed and seed + 1): what "as alike as one task trained
    twice" looks like. relative = (RSA - floor) / (ceiling - floor): 0 at the floor, 1 at the ceiling.

    All three tables come from `rsa_per_scale(..., replicates=True)` on the same images with the same
    bootstrap count and seed, so every replicate resamples the same images for all of them: gaps are
    judged by a paired bootstrap (`significance.compare`). `relative` is NaN at a scale where the
    ceiling does not clear the floor (no room to place a pair between them). Columns: scale, pair,
    rsa/low/high, floor(_low/_high), ceiling(_low/_high), room, relative(_low/_high), above_floor and
    verdict (compare's text on RSA vs floor).
    """
    rows = []
    for s, part in rsa.groupby("scale"):
        floor, floor_boot = _scale_mean(untrained, s)
        ceiling, ceiling_boot = _scale_mean(same_task, s)
        room = compare([ceiling], [floor], "same-task ceiling", "untrained floor", boot_a=_boot(ceiling_boot),
                       boot_b=_boot(floor_boot), alpha=1 - confidence)
        has_room = room.separable and room.better == "same-task ceiling"
        for _, r in part.iterrows():
            pair = f"{r['task_a']}–{r['task_b']}"
            above = compare([r["rsa"]], [floor], pair, "untrained floor", boot_a=_boot(r["replicates"]),
                            boot_b=_boot(floor_boot), alpha=1 - confidence)
            with np.errstate(divide="ignore", invalid="ignore"):
                rel_boot = (r["replicates"] - floor_boot) / (ceiling_boot - floor_boot)
            relative = (r["rsa"] - floor) / (ceiling - floor) if has_room else np.nan
            rel_low, rel_high = _interval(rel_boot, confidence) if has_room else (np.nan, np.nan)
            rows.append({"scale": int(s), "pair": pair, "rsa": r["rsa"], "low": r["low"], "high": r["high"],
                         "floor": floor, **dict(zip(("floor_low", "floor_high"),
                                                    _interval(floor_boot, confidence), strict=True)),
                         "ceiling": ceiling, **dict(zip(("ceiling_low", "ceiling_high"),
                                                        _interval(ceiling_boot, confidence), strict=True)),
                         "room": has_room, "relative": relative, "relative_low": rel_low,
                         "relative_high": rel_high, "above_floor": above.separable and above.better == pair,
                         "verdict": above.text, "relative_replicates": rel_boot if has_room else None,
                         "gap_replicates": r["replicates"] - floor_boot})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# 2 + 3. gradient and lookahead affinity, measured during multi-task training


def scale_parameter_groups(backbone: torch.nn.Module) -> list[list[torch.nn.Parameter]]:
    """The shared parameters of each scale, finest first: `stem` + `stages[0]` for scale 0, then
    `stages[s]` for scale s. On a sequential backbone (`cnn`, ResNets) `stages[s]` is the stage that
    produces map s; on `hrnet` it is branch s (its entry conv, its blocks and its fusion paths towards
    the other branches), the layers that compute at that resolution; the stem, which runs at the finest
    resolution and feeds every branch, is counted with scale 0 on both kinds."""
    if not hasattr(backbone, "stages") or not hasattr(backbone, "stem"):
        raise ValueError(f"{type(backbone).__name__}: per-scale affinity needs a backbone made of a stem "
                         "and stages (backbone='hrnet', 'cnn', 'resnet18' or 'resnet50')")
    groups = [list(backbone.stem.parameters()) + list(backbone.stages[0].parameters())]
    groups += [list(stage.parameters()) for stage in backbone.stages[1:]]
    return groups


def _flat(grads: Sequence[torch.Tensor | None], params) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                      for g, p in zip(grads, params, strict=True)])


# part of the cache name of stored measurements: bump when the probe changes. v4 adds the same-task
# cosine on two batches ("cosine_same_task"); a v3 file lacks it and is not read.
PROBE_VERSION = "v4"


class AffinityProbe:
    """Called by the training loop after every step; every `every` steps it measures, per scale,
    the task-gradient cosines and the TAG lookahead affinities on the current batch (in fp32).

    `records` holds one dict per measurement: step, scale, kind, task_a, task_b, value. Kinds:
    "cosine" (task_a, task_b: two tasks on the current batch), "lookahead" (task_a is the task whose
    update is applied, task_b the task whose loss is measured: not symmetric) and "cosine_same_task"
    (task_a = task_b = t): the cosine between t's gradients on the current batch and on the previous
    step's batch, both at the current parameters. The last is the batch-noise reference of a cosine:
    how far one task's own update direction moves when only the images change.
    """

    def __init__(self, every: int = 10, lookahead_step: float = 1e-3, lookahead_lr: float | None = None):
        if every < 1 or lookahead_step <= 0:
            raise ValueError(f"every={every}, lookahead_step={lookahead_step}: both must be positive")
        self.every, self.lookahead_step, self.lookahead_lr = every, lookahead_step, lookahead_lr
        self.records: list[dict] = []
        self._previous: dict | None = None  # the batch of the step before: the second batch of "same task"

    def _scale_gradients(self, model, batch, tasks, groups) -> tuple[dict, dict]:
        """(losses, {task: [flat gradient per scale group]}) on `batch`, for the tasks it supervises."""
        losses = task_losses(model(batch["image"]), batch, tasks)
        grads = {}
        for t in [t for t in tasks if losses[t].requires_grad]:
            g = torch.autograd.grad(losses[t] * tasks[t].weight, [p for grp in groups for p in grp],
                                    retain_graph=True, allow_unused=True)
            start, grads[t] = 0, []
            for grp in groups:
                grads[t].append(_flat(g[start:start + len(grp)], grp))
                start += len(grp)
        return losses, grads

    def __call__(self, model, batch: dict, tasks, optimizer, step: int) -> None:
        previous, self._previous = self._previous, batch
        if step % self.every:  # steps count from 1: the first measurement follows `every` updates
            return
        model_was_training = model.training
        model.eval()  # BatchNorm with running statistics: the lookahead compares like with like
        groups = scale_parameter_groups(model.backbone)
        losses, grads = self._scale_gradients(model, batch, tasks, groups)
        names = list(grads)
        # the same task on another batch at the same parameters (a batch compared with itself would give 1)
        other = self._scale_gradients(model, previous, tasks, groups)[1] \
            if previous is not None and previous is not batch else {}
        for s, grp in enumerate(groups):
            for a, b in itertools.combinations(names, 2):
                cos = torch.nn.functional.cosine_similarity(grads[a][s], grads[b][s], dim=0)
                self.records.append({"step": step, "scale": s, "kind": "cosine", "task_a": a, "task_b": b,
                                     "value": float(cos)})
            for t in [t for t in names if t in other]:
                cos = torch.nn.functional.cosine_similarity(grads[t][s], other[t][s], dim=0)
                self.records.append({"step": step, "scale": s, "kind": "cosine_same_task", "task_a": t,
                                     "task_b": t, "value": float(cos)})
            self._lookahead(model, batch, tasks, names, losses, grads, s, grp, step)
        model.zero_grad(set_to_none=True)
        model.train(model_was_training)

    @torch.no_grad()
    def _lookahead(self, model, batch, tasks, names, losses, grads, s, params, step) -> None:
        backup = [p.detach().clone() for p in params]
        weight_norm = float(torch.cat([p.flatten() for p in backup]).norm())
        for a in names:
            norm = float(grads[a][s].norm())
            if norm == 0:  # no gradient from this task at this scale: no step, no effect
                continue
            lr = self.lookahead_lr if self.lookahead_lr else self.lookahead_step * weight_norm / norm
            start = 0
            for p in params:  # theta_s <- theta_s - lr * g_a (only this scale's shared parameters)
                n = p.numel()
                p -= lr * grads[a][s][start:start + n].view_as(p)
                start += n
            after = task_losses(model(batch["image"]), batch, tasks)
            for b in names:
                before = float(losses[b])
                value = 1 - float(after[b]) / before if before > 0 else 0.0
                self.records.append({"step": step, "scale": s, "kind": "lookahead", "task_a": a,
                                     "task_b": b, "value": value})
            for p, saved in zip(params, backup, strict=True):
                p.copy_(saved)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.records)


def probe_path(config: TrainConfig, every: int, root=None) -> Path:
    """Where training_affinity stores the records of `config` measured every `every` steps."""
    root = Path(root) if root is not None else default_runs_root()
    return root / f"affinity-{config.model}-{config_hash(config)}-every{every}-{PROBE_VERSION}.json"


def training_affinity(config: TrainConfig | dict, every: int = 10, root=None, progress=None) -> pd.DataFrame:
    """Train `config` (an MTL model on a stem + stages backbone: hrnet, cnn, resnet18/50) with an
    AffinityProbe and return its records; stored as `affinity-<config hash>-every<N>.json` under the
    runs root (probe_path) and reused. The suite trains it before the notebooks (experiments.planned_probes);
    a second process asking for the same probe meanwhile waits for it instead of training it twice."""
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    validate(config)
    path = probe_path(config, every, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(path.name + ".lock")):
        if path.exists():
            return pd.DataFrame(json.loads(path.read_text()))
        probe = AffinityProbe(every=every)
        fit(config, store=None, progress=progress, step_callback=probe)
        atomic_write(path, lambda f: f.write(json.dumps(probe.records).encode()))
    return probe.table()


def affinity_matrices(records: pd.DataFrame, kind: str) -> dict[int, pd.DataFrame]:
    """{scale: task x task matrix} of `kind` averaged over training (cosine: symmetric, diagonal 1;
    lookahead: row = task whose update is applied, column = task whose loss is measured)."""
    chosen = records[records["kind"] == kind]
    tasks = list(dict.fromkeys([*chosen["task_a"], *chosen["task_b"]]))
    symmetric = kind == "cosine"
    out = {}
    for s, part in chosen.groupby("scale"):
        m = np.eye(len(tasks)) if symmetric else np.full((len(tasks), len(tasks)), np.nan)
        for (a, b), v in part.groupby(["task_a", "task_b"])["value"].mean().items():
            m[tasks.index(a), tasks.index(b)] = v
            if symmetric:
                m[tasks.index(b), tasks.index(a)] = v
        out[int(s)] = pd.DataFrame(m, index=tasks, columns=tasks)
    return out


def scale_name(s: int, strides: Sequence[int] | None = None) -> str:
    """The column name of scale `s`: "scale 0", or with the backbone's strides "scale 0 (1/2)"."""
    return f"scale {s}" if strides is None else f"scale {s} ({_stride(s, strides)})"


def _stride(s: int, strides: Sequence[int]) -> str:
    if not 0 <= s < len(strides):
        raise ValueError(f"scale {s}: strides {list(strides)} name only scales 0-{len(strides) - 1}")
    return f"1/{strides[s]}"


def _scale_index(column, position: int) -> int:
    """The scale a column stands for: the number in "scale s ..." (scale_name), else its position."""
    match = re.match(r"scale (\d+)", str(column))
    return int(match.group(1)) if match else position


def pair_table(matrices: Mapping[int, pd.DataFrame], symmetric: bool = True,
               strides: Sequence[int] | None = None) -> pd.DataFrame:
    """Task pairs x scales from per-scale matrices (symmetric: a pair once; else both directions);
    columns are `scale_name(s, strides)`, finest first."""
    tasks = list(next(iter(matrices.values())).index)
    pairs = itertools.combinations(tasks, 2) if symmetric else itertools.permutations(tasks, 2)
    rows = {f"{a}–{b}" if symmetric else f"{a}→{b}": {s: m.loc[a, b] for s, m in sorted(matrices.items())}
            for a, b in pairs}
    return pd.DataFrame(rows).T.rename_axis("pair").rename(columns=lambda s: scale_name(s, strides))


def ranking_changes(pairs: pd.DataFrame) -> dict:
    """What the point estimates say: the top pair at each scale, and Kendall's tau between the pair
    rankings of every two scales (1 = same order; lower = the estimates order the pairs differently
    there). Descriptive only: whether a difference exceeds the noise is `ranking_reversals`'s question."""
    from scipy.stats import kendalltau

    top = {col: pairs[col].idxmax() for col in pairs.columns}
    taus = {}
    for a, b in itertools.combinations(pairs.columns, 2):
        taus[f"{a} vs {b}"] = float(kendalltau(pairs[a], pairs[b]).statistic) if len(pairs) > 1 else 1.0
    return {"top_pair": top, "kendall_tau": taus, "top_pair_changes": len(set(top.values())) > 1,
            "min_tau": min(taus.values()) if taus else 1.0}


def ranking_reversals(values: pd.DataFrame, low: pd.DataFrame, high: pd.DataFrame) -> list[tuple]:
    """Ranking changes that the intervals support: (pair p, pair q, scale a, scale b) where at scale a
    p's interval lies wholly above q's and at scale b wholly below it. A Kendall tau below 1 alone
    can be one swap of two overlapping intervals; only a reversal of separated pairs says that the
    affinity ranking changes with scale beyond the measurement noise. Frames: pair x scale."""
    above = {col: {(p, q) for p in values.index for q in values.index
                   if p != q and low.loc[p, col] > high.loc[q, col]} for col in values.columns}
    return [(p, q, a, b) for a, b in itertools.permutations(values.columns, 2)
            for p, q in sorted(above[a]) if (q, p) in above[b]]


def rsa_matrices(rsa: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """{scale: task x task RSA matrix} from `rsa_per_scale`'s rows (symmetric, diagonal 1)."""
    tasks = list(dict.fromkeys([*rsa["task_a"], *rsa["task_b"]]))
    out = {}
    for s, part in rsa.groupby("scale"):
        m = np.eye(len(tasks))
        for a, b, v in zip(part["task_a"], part["task_b"], part["rsa"], strict=True):
            m[tasks.index(a), tasks.index(b)] = m[tasks.index(b), tasks.index(a)] = v
        out[int(s)] = pd.DataFrame(m, index=tasks, columns=tasks)
    return out


def step_bootstrap(records: pd.DataFrame, kinds: Sequence[str] = ("cosine", "cosine_same_task", "lookahead"),
                   bootstrap: int = 200, seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """The probe's measurements averaged over training, with a percentile interval from resampling the
    measurement steps. One row per (kind, scale, task_a, task_b): `value` (mean over the steps), `low`,
    `high` and `replicates` (the `bootstrap` resampled means). Every row is resampled with the same
    steps, so the replicates of two rows are paired. Successive measurements are correlated and drift
    with training: the interval says how much the mean depends on which steps were measured, not what
    another training run would give."""
    chosen = records[records["kind"].isin(kinds)]
    if chosen.empty:
        raise ValueError(f"records: no measurement of kind {list(kinds)}")
    table = chosen.pivot_table(index="step", columns=["kind", "scale", "task_a", "task_b"], values="value",
                               aggfunc="mean")
    values = table.to_numpy(dtype=float)  # (steps, columns); NaN where a step lacks a kind
    present = np.isfinite(values)
    counts = resample_counts(len(values), bootstrap, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        boots = (counts @ np.where(present, values, 0.0)) / (counts @ present)  # (bootstrap, columns)
    rows = []
    for c, (kind, scale, a, b) in enumerate(table.columns):
        low, high = _interval(boots[:, c], confidence) if bootstrap else (np.nan, np.nan)
        rows.append({"kind": kind, "scale": int(scale), "task_a": a, "task_b": b,
                     "value": float(np.nanmean(values[:, c])), "low": low, "high": high,
                     "replicates": boots[:, c]})
    return pd.DataFrame(rows)


def cosine_references(measured: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Each cross-task cosine against the batch-noise reference of its two tasks (rows of `step_bootstrap`
    with kinds "cosine" and "cosine_same_task").

    With g_t = mu_t + eps_t (expected gradient plus batch noise), one task's gradients on two batches have
    cos ~ |mu_t|^2 / (|mu_t|^2 + E|eps_t|^2) = c_t: 1 - c_t is the dissimilarity that batch noise alone
    puts between two gradients that want the same update. The same noise dilutes a cross-task cosine:
    cos(a, b) ~ rho_ab * sqrt(c_a c_b), rho_ab the cosine of the expected gradients (Spearman's correction
    for attenuation, 1904). So `reference` = sqrt(c_a c_b) is the cosine two tasks reach when they want
    the same update, and `relative` = cos / reference places a pair on that scale (1: as aligned as one
    task with itself). A pair is `beyond_noise` when its cosine lies below the reference by more than the
    paired interval: the two tasks ask for updates that differ more than one task's updates on two
    batches. `sign_clear`: the cosine's own interval excludes 0 (agreement or conflict on average).
    """
    same = measured[measured["kind"] == "cosine_same_task"].set_index(["scale", "task_a"])
    rows = []
    for _, r in measured[measured["kind"] == "cosine"].iterrows():
        s, a, b = r["scale"], r["task_a"], r["task_b"]
        if (s, a) not in same.index or (s, b) not in same.index:
            continue
        ca, cb = same.loc[(s, a)], same.loc[(s, b)]
        # a negative same-task cosine (noise only) gives no reference: clip at 0 before the root
        reference = float(np.sqrt(max(ca["value"], 0.0) * max(cb["value"], 0.0)))
        ref_boot = np.sqrt(np.clip(ca["replicates"], 0, None) * np.clip(cb["replicates"], 0, None))
        pair = f"{a}–{b}"
        verdict = compare([reference], [r["value"]], "same-task reference", pair, boot_a=_boot(ref_boot),
                          boot_b=_boot(r["replicates"]), alpha=1 - confidence)
        rows.append({"scale": int(s), "pair": pair, "cosine": r["value"], "low": r["low"], "high": r["high"],
                     "same_a": ca["value"], "same_b": cb["value"], "reference": reference,
                     "relative": r["value"] / reference if reference > 0 else np.nan,
                     "sign_clear": bool(r["low"] > 0 or r["high"] < 0),
                     "beyond_noise": verdict.separable and verdict.better == "same-task reference",
                     "verdict": verdict.text})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# 5. task grouping (Standley et al. 2020; TAG, Fifty et al. 2021): which tasks share a network


def pair_splits(tasks: Sequence[str]) -> list[tuple[tuple[str, str], ...]]:
    """Every way to split an even number of tasks into groups of two, each split's groups in task order:
    3 splits of 4 tasks, 15 of 6."""
    tasks = tuple(tasks)
    if len(tasks) % 2 or len(set(tasks)) != len(tasks) or not tasks:
        raise ValueError(f"tasks {list(tasks)}: need an even number of distinct tasks")
    if len(tasks) == 2:
        return [(tasks,)]
    first, rest = tasks[0], tasks[1:]
    return [((first, partner), *others) for partner in rest
            for others in pair_splits([t for t in rest if t != partner])]


def split_name(split: Sequence[Sequence[str]]) -> str:
    """'semseg + depth / normals + edge' (no '|': the name goes into markdown tables)."""
    return " / ".join(" + ".join(group) for group in split)


def _pair_value(values: Mapping, a: str, b: str):
    for key in ((a, b), (b, a), frozenset((a, b))):
        if key in values:
            return values[key]
    raise KeyError(f"no value for the pair {a}–{b}")


def split_scores(pair_values: Mapping, splits: Sequence[Sequence[Sequence[str]]]) -> dict:
    """{split name: sum over its groups of the pair's value}: the within-group affinity a grouping keeps
    (Standley et al. 2020 choose the grouping with the best total; TAG sums inter-task affinities within
    groups). `pair_values` is keyed by (a, b), either order, or frozenset; values may be arrays
    (bootstrap replicates), summed elementwise."""
    return {split_name(split): sum(_pair_value(pair_values, *group) for group in split) for split in splits}


def best_split(points: Mapping[str, float], replicates: Mapping[str, np.ndarray] | None = None,
               name: str = "score", alpha: float = 0.05) -> dict:
    """The split with the highest score, and whether it beats each other split beyond the noise: a
    paired bootstrap of the gap (`significance.compare`) when `replicates` are given (resampled with the
    same images or steps for every split), else "not separable at this budget". Returns best, runner_up,
    verdicts ({other split: Verdict}) and separable (the best beats every other)."""
    order = sorted(points, key=lambda k: points[k], reverse=True)
    best = order[0]
    verdicts = {}
    for other in order[1:]:
        boot = (_boot(replicates[best]), _boot(replicates[other])) if replicates is not None else (None, None)
        verdicts[other] = compare([points[best]], [points[other]], best, other, boot_a=boot[0],
                                  boot_b=boot[1], alpha=alpha)
    separable = bool(verdicts) and all(v.separable and v.better == best for v in verdicts.values())
    return {"measure": name, "best": best, "runner_up": order[1] if len(order) > 1 else None,
            "verdicts": verdicts, "separable": separable}


# ----------------------------------------------------------------------------------------------
# 4. figures


def plot_scale_heatmaps(matrices: Mapping[int, pd.DataFrame], title: str,
                        strides: Sequence[int] | None = None, center: float = 0.0, save_to=None):
    """One heatmap per scale, finest first, on a shared colour scale centred on `center`. `strides`:
    the backbone's (`backbone.strides`), to title each panel with its stride; None: "scale s" only."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    values = np.concatenate([m.values[~np.eye(len(m), dtype=bool)] for m in matrices.values()])
    span = float(np.nanmax(np.abs(values - center))) or 1.0
    fig, axes = plt.subplots(1, len(matrices), figsize=(3.4 * len(matrices), 3.2), squeeze=False)
    for ax, (s, m) in zip(axes[0], sorted(matrices.items()), strict=True):
        sns.heatmap(m.astype(float), ax=ax, annot=True, fmt=".2f", cmap="RdBu_r", center=center,
                    vmin=center - span, vmax=center + span, cbar=False, square=True, annot_kws={"size": 8})
        ax.set_title(scale_name(s, strides))
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig


def plot_pairs_across_scales(pairs: pd.DataFrame, ylabel: str, low: pd.DataFrame | None = None,
                             high: pd.DataFrame | None = None, strides: Sequence[int] | None = None,
                             save_to=None):
    """A line per task pair across the scales (with a band from `low` / `high` when given). Columns are
    scales, finest first ("scale s ...": pair_table's names); `strides` (the backbone's) labels the
    axis with each scale's stride, None with the scale index."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    x = np.arange(pairs.shape[1])
    for pair, row in pairs.iterrows():
        (line,) = ax.plot(x, row.values, marker="o", label=pair)
        if low is not None and high is not None:
            ax.fill_between(x, low.loc[pair].values, high.loc[pair].values, color=line.get_color(),
                            alpha=0.15)
    _scale_axis(ax, [_scale_index(col, i) for i, col in enumerate(pairs.columns)], strides)
    ax.set_ylabel(ylabel)
    ax.axhline(0, color="grey", lw=0.8)
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig


def _scale_axis(ax, scales: Sequence[int], strides: Sequence[int] | None) -> None:
    x = np.arange(len(scales))
    if strides is None:
        ax.set_xticks(x, [str(s) for s in scales])
        ax.set_xlabel("scale (0 = the backbone's finest map)")
    else:
        ax.set_xticks(x, [_stride(s, strides) for s in scales])
        ax.set_xlabel("scale (backbone stride)")


def plot_rsa_references(references: pd.DataFrame, strides: Sequence[int] | None = None, save_to=None):
    """Left: each pair's RSA across the scales (band: bootstrap interval) between the untrained floor
    (grey) and the same-task ceiling (green). Right: the relative score (RSA - floor) / (ceiling - floor)
    with its interval, at the scales where the ceiling clears the floor. Rows: `rsa_references`."""
    import matplotlib.pyplot as plt

    scales = sorted(references["scale"].unique())
    x = np.arange(len(scales))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.9))
    ref = references.groupby("scale").first().loc[scales]
    for name, color in (("floor", "grey"), ("ceiling", "tab:green")):
        label = "untrained networks (floor)" if name == "floor" else "same task, two seeds (ceiling)"
        left.plot(x, ref[name], color=color, lw=2, ls="--", marker="s", label=label)
        left.fill_between(x, ref[f"{name}_low"], ref[f"{name}_high"], color=color, alpha=0.2)
    for pair, part in references.groupby("pair", sort=False):
        part = part.set_index("scale").loc[scales]
        (line,) = left.plot(x, part["rsa"], marker="o", label=pair)
        left.fill_between(x, part["low"], part["high"], color=line.get_color(), alpha=0.12)
        if part["room"].any():
            right.errorbar(x, part["relative"], yerr=[part["relative"] - part["relative_low"],
                                                      part["relative_high"] - part["relative"]],
                           marker="o", capsize=3, color=line.get_color(), label=pair)
    left.set_ylabel("RSA (Spearman of RDMs)")
    left.set_title("RSA between the floor and the ceiling")
    left.legend(fontsize=7, loc="lower right")
    right.axhline(0, color="grey", lw=1, ls="--")
    right.axhline(1, color="tab:green", lw=1, ls="--")
    right.set_ylabel("(RSA − floor) / (ceiling − floor)")
    right.set_title("relative to the references (0: untrained, 1: same task)")
    if not references["room"].any():
        right.text(0.5, 0.5, "at no scale do two trainings of one task\nclear the untrained floor:\n"
                   "no relative score", ha="center", va="center", transform=right.transAxes)
    for ax in (left, right):
        _scale_axis(ax, scales, strides)
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig


def plot_cosines_with_reference(measured: pd.DataFrame, strides: Sequence[int] | None = None, save_to=None):
    """Side by side on one y axis: the cross-task gradient cosines across the scales (left) and each
    task's cosine with itself on two batches, the batch-noise reference (right); bands: intervals over
    the measurement steps. Rows: `step_bootstrap`."""
    import matplotlib.pyplot as plt

    scales = sorted(measured["scale"].unique())
    x = np.arange(len(scales))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.9), sharey=True)
    for ax, kind, title in ((axes[0], "cosine", "two tasks, one batch"),
                            (axes[1], "cosine_same_task", "one task, two batches (reference)")):
        part = measured[measured["kind"] == kind]
        for (a, b), rows in part.groupby(["task_a", "task_b"], sort=False):
            rows = rows.set_index("scale").reindex(scales)
            (line,) = ax.plot(x, rows["value"], marker="o", ls="-" if kind == "cosine" else "--",
                              label=f"{a}–{b}" if a != b else a)
            ax.fill_between(x, rows["low"], rows["high"], color=line.get_color(), alpha=0.15)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(title)
        ax.legend(fontsize=7)
        _scale_axis(ax, scales, strides)
    axes[0].set_ylabel("gradient cosine (mean over training)")
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig


def plot_split_scores(table: pd.DataFrame, save_to=None):
    """One panel per column of `table` (rows: splits; a column per measure, Δ included), bars with the
    interval in `<column> low` / `<column> high` when present; each measure's highest split in orange.
    A bar per split, never a curve."""
    import matplotlib.pyplot as plt

    measures = [c for c in table.columns if not c.endswith((" low", " high"))]
    fig, axes = plt.subplots(1, len(measures), figsize=(3.4 * len(measures), 3.6), squeeze=False)
    y = np.arange(len(table))
    for ax, measure in zip(axes[0], measures, strict=True):
        values = table[measure].astype(float)
        err = None
        if f"{measure} low" in table and f"{measure} high" in table:
            err = np.abs(np.stack([values - table[f"{measure} low"], table[f"{measure} high"] - values]))
        colors = ["tab:orange" if v == values.max() else "tab:blue" for v in values]
        ax.barh(y, values, xerr=err, capsize=3, color=colors, alpha=0.75)
        ax.set_yticks(y, table.index if ax is axes[0][0] else [""] * len(y), fontsize=8)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_title(measure, fontsize=9)
        ax.invert_yaxis()
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig
