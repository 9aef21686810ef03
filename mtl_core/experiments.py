"""The study settings and table helpers the notebooks share: what a profile trains, how variants are
run over seeds, and how their results become the papers' tables (metrics, Δm, params / FLOPs).

    config = base_config("quick", model="mtinet", tasks=("semseg", "depth"))
    results = run_variants({"MTL baseline": {"model": "mtl_baseline"}, "MTI-Net": {"model": "mtinet"}},
                           profile="quick", tasks=("semseg", "depth"))
    singles = run_single_task("quick", ("semseg", "depth"))
    delta_m_table(results, singles, ("semseg", "depth"))

Every run goes through the run store (`runs.train_or_load`): the notebooks that need the same
config (e.g. the single-task networks of 02 and 03) train it once and read it afterwards.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .data.cache import write_text_atomic
from .metrics import delta_m, primary_metrics
from .profiles import get_profile
from .runs import RunResult, train_or_load
from .tasks import make_tasks
from .train import TrainConfig, eval_protocol, validate

# What each profile trains. The dense studies (01-03, 05, 06) use the in-house `hrnet` backbone with
# branch widths `widths`: four parallel resolutions that keep exchanging information, so every map is an
# end-of-network feature as in the papers (HRNet-W18 in MTI-Net). Its pyramid starts at stride 2, so a
# 64x64 image gives 32, 16, 8 and 4 pixel maps: the same maps as stride 4 on 128x128 images, ~1.2-1.3x
# faster to train (benchmarks/backbones.py). The detectors (04) use the plain `cnn` with `cnn_widths`:
# ROCK reads a single map, the last. `model_options` are each model's defaults on `backbone` (explicit
# options win): they keep the papers' proportions at these widths (tests/test_models_dense.py checks them):
# single-task networks about the MTL baseline's size, MTI-Net ~2.5x its parameters and ~1.3x its
# GMACs (paper, HRNet-18 on NYUD: 2.1x and 1.3x), PAD-Net the most GMACs. MTI-Net's task features are
# 16 channels wide at most (the official code uses the backbone's widths, 8 ... 64 here: on this
# shallow backbone that would be ~11x the baseline's parameters) and PAD-Net's are 16 wide, at the
# finest scale.
# Schedules: `quick` and `full` train the same 12 epochs of 1000 images (744 steps, cosine schedule);
# `quick` drops variants and seeds, never steps (one seed, the core comparison), `full` adds every
# variant and 3 seeds. benchmarks/learning_curves.py (2 seeds) measured that at 12 epochs edge has
# converged (< 2 % change over the last quarter) but semseg, depth and normals still move 3-14 % (MTI-Net
# more on one seed), mostly because they keep improving while the cosine schedule decays: longer
# schedules are needed for converged numbers (`overrides`). Every run validates at each quarter of its
# schedule, and `convergence` shows in each study what still moved over the last
# quarter. An epoch trains in ~9 s for a single-task network, ~16 s for the MTL baseline, ~26 s for
# MTI-Net and ~38 s for PAD-Net (2-core CPU, fp32, one thread per run as `suite --jobs 2` gives).
# The detectors keep their own short schedule (`detection_epochs`) until the detection study is rebuilt.
# `overrides` (TrainConfig fields for all of a notebook's runs) train longer or on more images.
# `num_train` / `num_val` in a profile here override its data sizes (profiles.PROFILES) for training.
STUDY_MODELS = {"backbone": "hrnet", "widths": (8, 16, 32, 64), "detector_backbone": "cnn",
                "model_options": {"mtinet": {"task_widths": (8, 16, 16, 16)}, "padnet": {"width": 16}}}
STUDY: dict[str, dict] = {
    # CI: every notebook executes end to end in seconds; the numbers mean nothing
    "ci": {**STUDY_MODELS, "epochs": 2, "detection_epochs": 2, "seeds": (0,), "cnn_widths": (8, 16, 24, 32),
           "batch_size": 16, "num_train": 48, "num_val": 16, "rsa_images": 16, "bootstrap": 50,
           "affinity_every": 2, "lr": 5e-3},
    # the core comparison at the full schedule, one seed: every figure
    "quick": {**STUDY_MODELS, "epochs": 12, "detection_epochs": 1, "seeds": (0,),
              "cnn_widths": (16, 32, 48, 64), "batch_size": 16, "rsa_images": 64, "bootstrap": 200,
              "affinity_every": 25, "lr": 2e-3},
    # every variant of the papers' ablations, 3 seeds (mean ± std), the same schedule
    "full": {**STUDY_MODELS, "epochs": 12, "detection_epochs": 2, "seeds": (0, 1, 2),
             "cnn_widths": (16, 32, 48, 64), "batch_size": 16, "rsa_images": 100, "bootstrap": 500,
             "affinity_every": 25, "lr": 2e-3},
}


def study(profile: str) -> dict:
    """The study settings of `profile` merged with its data sizes (profiles.PROFILES)."""
    if profile not in STUDY:
        raise ValueError(f"profile={profile!r}: expected one of {tuple(STUDY)}")
    return {**get_profile(profile), **STUDY[profile]}


def base_config(profile: str, *, dataset: str = "synthetic", data_dir: str | None = None, seed: int = 0,
                **fields) -> TrainConfig:
    """A TrainConfig sized by `profile`; `fields` override any TrainConfig field.

    The backbone is the profile's `backbone` (`detector_backbone` when the tasks include detection)
    unless one is given (None picks the profile's too); the in-house backbones get the profile's widths
    (`widths` for the dense backbone, `cnn_widths` for `cnn`) and, on the dense backbone, the model its
    study options (`model_options`), each under what `fields` give. Val metrics are computed at every
    quarter of the schedule (eval_every = epochs / 4), unless `eval_every` is given: enough to show
    convergence (`convergence`) at a small cost."""
    s = study(profile)
    tasks = fields.get("tasks", TrainConfig.tasks)
    detector = "detection" in ((tasks,) if isinstance(tasks, str) else tuple(tasks))
    values = {"size": s["size"], "num_train": s["num_train"], "num_val": s["num_val"],
              "epochs": s["detection_epochs" if detector else "epochs"], "batch_size": s["batch_size"],
              "lr": s["lr"], "seed": seed, "dataset": dataset, "data_dir": data_dir}
    values.update(fields)
    values.setdefault("eval_every", max(1, values["epochs"] // 4))
    if values.get("backbone") is None:  # None: the study's choice
        values["backbone"] = s["detector_backbone"] if detector else s["backbone"]
    widths = {s["backbone"]: s["widths"], "cnn": s["cnn_widths"]}.get(values["backbone"])
    if widths is not None:
        values["backbone_options"] = {"widths": list(widths), **values.get("backbone_options", {})}
    # the study options are sized for the study backbone; sequences as lists, as a stored config reads back
    study_options = s["model_options"].get(values.get("model", TrainConfig.model), {})
    defaults = ({k: list(v) if isinstance(v, tuple) else v for k, v in study_options.items()}
                if values["backbone"] == s["backbone"] else {})
    values["model_options"] = {**defaults, **values.get("model_options", {})}
    config = TrainConfig.from_dict(values)
    validate(config)
    return config


def progress_enabled() -> bool | None:
    """Progress bars unless the suite runner switched them off (MTL_CORE_PROGRESS=0)."""
    return None if os.environ.get("MTL_CORE_PROGRESS", "1") != "0" else False


def run(config: TrainConfig | dict, root=None) -> RunResult:
    """Train `config` or read its stored result."""
    return train_or_load(config, root=root, progress=progress_enabled())


def run_variants(variants: Mapping[str, Mapping], profile: str, seeds: Iterable[int] | None = None,
                 root=None, **common) -> dict[str, list[RunResult]]:
    """{label: [RunResult per seed]} for `variants` = {label: config overrides}, each on top of
    `base_config(profile, **common)`. All configs are validated before anything trains."""
    seeds = tuple(seeds if seeds is not None else study(profile)["seeds"])
    if not seeds:
        raise ValueError("seeds: at least one seed is needed")
    configs = {label: [base_config(profile, seed=seed, **{**common, **overrides}) for seed in seeds]
               for label, overrides in variants.items()}
    return {label: [run(c, root) for c in cs] for label, cs in configs.items()}


def run_single_task(profile: str, tasks: Iterable[str], seeds: Iterable[int] | None = None, root=None,
                    **common) -> dict[str, list[RunResult]]:
    """One single-task network per task (Δm's reference, RSA's networks): {task: [RunResult per seed]}."""
    return {task: run_variants({task: {"model": "single_task", "tasks": (task,)}}, profile, seeds, root,
                               **common)[task] for task in tasks}


def _unflatten(metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        task, _, name = key.partition("/")
        if name and not task.startswith(("val_loss", "loss")):
            out.setdefault(task, {})[name] = value
    return out


def metrics_table(results: Mapping[str, list[RunResult]], tasks: Iterable[str],
                  primary_only: bool = False) -> pd.DataFrame:
    """Rows = variants; columns = (task/metric, mean) and (task/metric, std) over seeds; with
    `primary_only` only each task's primary metric."""
    specs = make_tasks(tuple(tasks))
    rows = {}
    for label, runs in results.items():
        row = {}
        for task, spec in specs.items():
            names = (spec.primary,) if primary_only else spec.metrics
            for name in names:
                values = [r.metrics.get(f"{task}/{name}", math.nan) for r in runs]
                row[(f"{task}/{name}", "mean")] = float(np.mean(values))
                row[(f"{task}/{name}", "std")] = float(np.std(values)) if len(values) > 1 else 0.0
        rows[label] = row
    table = pd.DataFrame(rows).T
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


def task_specs(config: TrainConfig) -> dict:
    """The task specs a run of `config` trains with: class lists and loss weights as its dataset gives
    them (the synthetic benchmark's own weights, the official ones on real data), under `loss_weights`."""
    from .train import make_dataset

    val = make_dataset(config, "val", config.val_domain)
    return make_tasks(config.tasks, dataset=val, weights=config.loss_weights)


CONVERGED_CHANGE = 2.0  # %: a run whose primary metrics moved less over its last quarter has converged


def convergence(results: Mapping[str, list[RunResult]], tasks: Iterable[str]) -> pd.DataFrame:
    """How much each variant's primary metrics still moved over the last quarter of training: the
    relative change (%) between the validation at ≥ 3/4 of the schedule (the latest evaluation at or
    before it) and the final one, as the worst over seeds. Columns: one per task, `worst` and
    `converged` (worst < CONVERGED_CHANGE). NaN where the history has no evaluation there."""
    specs = make_tasks(tuple(tasks))
    rows = {}
    for label, runs in results.items():
        row = {}
        for task, spec in specs.items():
            key, changes = f"{task}/{spec.primary}", []
            for r in runs:
                h = r.history
                if h.empty or key not in h or "epoch" not in h:
                    changes.append(math.nan)
                    continue
                evaluated = h.dropna(subset=[key])
                last = int(h["epoch"].max())
                before = evaluated[(evaluated["epoch"] <= 0.75 * last) & (evaluated["epoch"] < last)]
                final = evaluated[evaluated["epoch"] == last]
                if before.empty or final.empty:
                    changes.append(math.nan)
                    continue
                a, b = float(before[key].iloc[-1]), float(final[key].iloc[0])
                changes.append(abs(b - a) / abs(b) * 100 if b != 0 else math.nan)
            row[f"Δ {task} (%)"] = max(changes) if not all(map(math.isnan, changes)) else math.nan
        worst = [v for v in row.values() if not math.isnan(v)]
        row["worst"] = max(worst) if worst else math.nan
        row["converged"] = bool(worst) and row["worst"] < CONVERGED_CHANGE
        rows[label] = row
    return pd.DataFrame(rows).T


TRIVIAL_LABEL = "trivial predictor (no image)"


def trivial_results(config: TrainConfig, tasks: Iterable[str]) -> dict[str, list[RunResult]]:
    """{TRIVIAL_LABEL: [a RunResult]} holding `references.trivial_metrics` on the config's data: a
    reference row for `metrics_table` / `delta_m_table` (what a predictor that ignores the image gets)."""
    from .references import trivial_metrics
    from .train import make_dataset

    tasks = tuple(tasks)
    reference = TrainConfig.from_dict({**config.to_dict(), "tasks": tasks})
    train = make_dataset(reference, "train", reference.train_domains[0])
    val = make_dataset(reference, "val", reference.val_domain)
    values = trivial_metrics(train, val, tasks, protocol=eval_protocol(reference))
    flat = {f"{t}/{m}": v for t, ms in values.items() for m, v in ms.items()}
    return {TRIVIAL_LABEL: [RunResult(reference, Path("."), flat, pd.DataFrame(), trained=False)]}


def _delta_m_or_nan(results, baselines, specs, metrics) -> float:
    """Δm, or NaN with a warning when a baseline metric is 0 (e.g. an untrained single-task network's
    mIoU in the ci profile): a relative change to 0 is undefined, and one such task must not stop a
    notebook. A task missing from the results still raises."""
    try:
        return delta_m(results, baselines, specs, metrics)
    except ValueError as exc:
        if "nonzero baseline" not in str(exc):
            raise
        warnings.warn(f"{exc}; Δm is NaN", stacklevel=3)
        return math.nan


def _delta_m_setup(results, single_task, tasks, metrics):
    specs = make_tasks(tuple(tasks))
    metrics = dict(metrics) if metrics is not None else primary_metrics(
        specs, evaluation_protocol({**results, **single_task}))
    baseline = {}
    for task in specs:
        if task not in single_task:
            raise ValueError(f"single_task: no single-task result for task {task!r}")
        per_seed = [_unflatten(r.metrics).get(task, {}) for r in single_task[task]]
        baseline[task] = {m: float(np.mean([p[m] for p in per_seed])) for m in per_seed[0]}
    return specs, metrics, baseline


def delta_m_seeds(results: Mapping[str, list[RunResult]], single_task: Mapping[str, list[RunResult]],
                  tasks: Iterable[str], metrics: Mapping[str, list[str]] | None = None
                  ) -> dict[str, list[float]]:
    """{variant: [Δm (%) of each seed]} as `delta_m_table` computes them: what `significance.compare`
    needs to decide whether two variants differ."""
    specs, metrics, baseline = _delta_m_setup(results, single_task, tasks, metrics)
    return {label: [_delta_m_or_nan(_unflatten(r.metrics), baseline, specs, metrics) for r in runs]
            for label, runs in results.items()}


def delta_m_table(results: Mapping[str, list[RunResult]], single_task: Mapping[str, list[RunResult]],
                  tasks: Iterable[str], metrics: Mapping[str, list[str]] | None = None) -> pd.DataFrame:
    """Δm (%) of every variant vs the single-task networks (metrics.delta_m; positive = better):
    per seed against the seed-mean of the single-task metrics, then mean ± std over seeds.
    `metrics` (default: each task's primary metric under the runs' evaluation protocol, as MTI-Net
    reports Δm: mIoU, RMSE, mean angle, odsF, and maxF / official: saliency mIoU) chooses them.
    Columns: delta_m, delta_m_std, and Δ% per task. `delta_m_seeds` gives the per-seed values."""
    specs, metrics, baseline = _delta_m_setup(results, single_task, tasks, metrics)
    rows = {}
    for label, values in delta_m_seeds(results, single_task, tasks, metrics).items():
        rows[label] = {"delta_m": float(np.mean(values)),
                       "delta_m_std": float(np.std(values)) if len(values) > 1 else 0.0}
        for t in specs:  # the same formula restricted to one task: that task's relative change
            only = {t: metrics[t]} if t in metrics else None
            rows[label][f"Δ {t} (%)"] = float(np.mean([
                _delta_m_or_nan(_unflatten(r.metrics), {t: baseline[t]}, {t: specs[t]}, only)
                for r in results[label]]))
    return pd.DataFrame(rows).T


PROTOCOL_TEXT = {
    "default": "default (this suite's definitions; `metrics.py` documents each)",
    "official": "official (MTI-Net's evaluation code: mIoU over all classes, depth clamp, saliency "
                "mIoU in Δm, BSDS edge matching)",
}


def evaluation_protocol(results: Mapping[str, list[RunResult]]) -> str:
    """The evaluation protocol (metrics.PROTOCOLS) shared by all `results`; mixed protocols are refused:
    their numbers do not compare."""
    used = {eval_protocol(r.config) for runs in results.values() for r in runs}
    if len(used) > 1:
        raise ValueError(f"results evaluated under different protocols {sorted(used)}: not comparable")
    return used.pop() if used else "default"


def resources(config: TrainConfig) -> dict[str, float]:
    """Parameters (millions) and GMACs of one forward pass at the config's image size."""
    from .models import build_model
    from .models.summary import model_summary

    model = build_model(config.model, make_tasks(config.tasks), backbone=config.backbone,
                        backbone_options=config.backbone_options, **config.model_options)
    total = model_summary(model, config.size).loc["total"]
    return {"params (M)": float(total["params"]) / 1e6, "GMACs": float(total["gmacs"])}


def format_mean_std(table: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """A (metric, mean/std) table as 'mean ± std' strings (just the mean with a single seed)."""
    out = {}
    for metric in dict.fromkeys(c[0] for c in table.columns):
        mean, std = table[(metric, "mean")], table[(metric, "std")]
        out[metric] = [f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if s > 0 else "")
                       for m, s in zip(mean, std, strict=True)]
    return pd.DataFrame(out, index=table.index)


def markdown_table(table: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as a GitHub markdown table (numbers with `digits` significant digits)."""
    def cell(v):
        return f"{v:.{digits}g}" if isinstance(v, float | np.floating) else str(v)

    names = [" / ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in table.columns]
    lines = ["| " + " | ".join([str(table.index.name or "")] + names) + " |",
             "|" + "---|" * (len(names) + 1)]
    lines += ["| " + " | ".join([str(i)] + [cell(v) for v in row]) + " |"
              for i, row in zip(table.index, table.itertuples(index=False), strict=True)]
    return "\n".join(lines)


def write_summary(output_dir: str | os.PathLike, title: str,
                  sections: Mapping[str, pd.DataFrame | str], left_out: Iterable[str] = (),
                  protocol: str | None = None) -> Path:
    """The notebook's `summary.md` (the suite report includes it): a title, the evaluation protocol
    of its numbers (`evaluation_protocol`), each section as a markdown table or text, then what the
    profile left out (variants a larger profile trains). Written atomically."""
    lines = [f"### {title}", ""]
    if protocol is not None:
        lines += [f"Evaluation protocol: {PROTOCOL_TEXT[protocol]}.", ""]
    for heading, body in sections.items():
        lines += [f"**{heading}**", ""]
        lines += [markdown_table(body) if isinstance(body, pd.DataFrame) else str(body), ""]
    left_out = list(left_out)
    if left_out:
        lines += [f"**Left out by this profile** (the `full` profile runs them): {', '.join(left_out)}", ""]
    path = Path(output_dir) / "summary.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "\n".join(lines))
    return path
