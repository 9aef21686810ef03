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

from .data.cache import atomic_write
from .losses import task_losses
from .plots import save_figure
from .runs import config_hash, default_runs_root
from .train import TrainConfig, fit, validate

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


def rdm_similarity(rdms: Mapping[str, np.ndarray], images: np.ndarray | None = None) -> pd.DataFrame:
    """Spearman correlation between the tasks' RDMs (upper triangles), optionally restricted to a
    resample `images` of image indices (pairs of a resampled image with itself are left out)."""
    tasks = list(rdms)
    k = next(iter(rdms.values())).shape[0]
    idx = np.arange(k) if images is None else np.asarray(images)
    i, j = np.triu_indices(len(idx), 1)
    keep = idx[i] != idx[j]
    rows, cols = idx[i][keep], idx[j][keep]
    vectors = {t: rdms[t][rows, cols] for t in tasks}
    matrix = pd.DataFrame(np.eye(len(tasks)), index=tasks, columns=tasks)
    for a, b in itertools.combinations(tasks, 2):
        matrix.loc[a, b] = matrix.loc[b, a] = _spearman(vectors[a], vectors[b])
    return matrix


def rsa_per_scale(models: Mapping[str, torch.nn.Module], images: torch.Tensor, bootstrap: int = 200,
                  seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """RSA between single-task networks at every scale, with bootstrap intervals over the images.

    Returns one row per (scale, task pair): `rsa` (on all K images), `low` / `high` (percentile
    interval of `bootstrap` resamples of the images).
    """
    features = {t: scale_features(m, images) for t, m in models.items()}
    num_scales = len(next(iter(features.values())))
    rng = np.random.default_rng(seed)
    resamples = [rng.integers(0, len(images), len(images)) for _ in range(bootstrap)]
    alpha = (1 - confidence) / 2
    rows = []
    for s in range(num_scales):
        rdms = {t: rdm(f[s]) for t, f in features.items()}
        full = rdm_similarity(rdms)
        boots = [rdm_similarity(rdms, r) for r in resamples]
        for a, b in itertools.combinations(list(models), 2):
            values = np.array([m.loc[a, b] for m in boots])
            rows.append({"scale": s, "task_a": a, "task_b": b, "rsa": full.loc[a, b],
                         "low": np.quantile(values, alpha) if bootstrap else np.nan,
                         "high": np.quantile(values, 1 - alpha) if bootstrap else np.nan})
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


PROBE_VERSION = "v3"  # part of the cache name of stored measurements: bump when the probe changes


class AffinityProbe:
    """Called by the training loop after every step; every `every` steps it measures, per scale,
    the task-gradient cosines and the TAG lookahead affinities on the current batch (in fp32).

    `records` holds one dict per measurement: step, scale, kind ("cosine" / "lookahead"), task_a,
    task_b, value. For "lookahead", task_a is the task whose update is applied and task_b the task
    whose loss is measured (the matrix is not symmetric).
    """

    def __init__(self, every: int = 10, lookahead_step: float = 1e-3, lookahead_lr: float | None = None):
        if every < 1 or lookahead_step <= 0:
            raise ValueError(f"every={every}, lookahead_step={lookahead_step}: both must be positive")
        self.every, self.lookahead_step, self.lookahead_lr = every, lookahead_step, lookahead_lr
        self.records: list[dict] = []

    def __call__(self, model, batch: dict, tasks, optimizer, step: int) -> None:
        if step % self.every:  # steps count from 1: the first measurement follows `every` updates
            return
        model_was_training = model.training
        model.eval()  # BatchNorm with running statistics: the lookahead compares like with like
        groups = scale_parameter_groups(model.backbone)
        losses = task_losses(model(batch["image"]), batch, tasks)
        names = [t for t in tasks if losses[t].requires_grad]
        grads = {}
        for t in names:  # per task: one gradient vector per scale group
            g = torch.autograd.grad(losses[t] * tasks[t].weight, [p for grp in groups for p in grp],
                                    retain_graph=True, allow_unused=True)
            start, grads[t] = 0, []
            for grp in groups:
                grads[t].append(_flat(g[start:start + len(grp)], grp))
                start += len(grp)
        for s, grp in enumerate(groups):
            for a, b in itertools.combinations(names, 2):
                cos = torch.nn.functional.cosine_similarity(grads[a][s], grads[b][s], dim=0)
                self.records.append({"step": step, "scale": s, "kind": "cosine", "task_a": a, "task_b": b,
                                     "value": float(cos)})
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


def training_affinity(config: TrainConfig | dict, every: int = 10, root=None, progress=None) -> pd.DataFrame:
    """Train `config` (an MTL model on a stem + stages backbone: hrnet, cnn, resnet18/50) with an
    AffinityProbe and return its records; stored as `affinity-<config hash>-every<N>.json` under the
    runs root and reused."""
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    validate(config)
    root = Path(root) if root is not None else default_runs_root()
    path = root / f"affinity-{config.model}-{config_hash(config)}-every{every}-{PROBE_VERSION}.json"
    if path.exists():
        return pd.DataFrame(json.loads(path.read_text()))
    probe = AffinityProbe(every=every)
    fit(config, store=None, progress=progress, step_callback=probe)
    root.mkdir(parents=True, exist_ok=True)
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
    scales = [_scale_index(col, i) for i, col in enumerate(pairs.columns)]
    if strides is None:
        ax.set_xticks(x, [str(s) for s in scales])
        ax.set_xlabel("scale (0 = the backbone's finest map)")
    else:
        ax.set_xticks(x, [_stride(s, strides) for s in scales])
        ax.set_xlabel("scale (backbone stride)")
    ax.set_ylabel(ylabel)
    ax.axhline(0, color="grey", lw=0.8)
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig

