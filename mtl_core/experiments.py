"""The study settings and table helpers the notebooks share: what a profile trains, how variants are
run over seeds, and how their results become the papers' tables (metrics, Δm, params / FLOPs).

    config = base_config("quick", model="mtinet", tasks=("semseg", "depth"))
    results = run_variants({"MTL baseline": {"model": "mtl_baseline"}, "MTI-Net": {"model": "mtinet"}},
                           profile="quick", tasks=("semseg", "depth"))
    singles = run_single_task("quick", ("semseg", "depth"))
    delta_m_table(results, singles, ("semseg", "depth"))

Every run goes through the run store (`runs.train_or_load`): the notebooks that need the same
config (e.g. the single-task networks of 02 and 03) train it once and read it afterwards. What each
study notebook trains is declared here (`planned_runs`, from the variants the notebooks read); the
suite trains those runs in a pool of processes before it executes the notebooks (suite.run_suite).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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
# Schedules: `quick` and `full` train the same 96 epochs of 1000 images (5952 steps, cosine schedule);
# `quick` drops variants and seeds, never steps (one seed, the core comparison), `full` adds every
# variant and 3 seeds. benchmarks/learning_curves.py measured the MTL baseline (seed 0) far from
# converged at 24 epochs (mIoU 49.9) and at 48 (61.5; semseg, depth, normals still moving 2-3.4 % over
# the last quarter); at 96 it reaches mIoU 66.8 and moves 2.1 % (semseg), 6.7 % (depth RMSE), 2.4 %
# (normals) and 0.3 % (edge) over its last quarter, and less than 1.2 % on every task over its last
# eighth: the curve has flattened, depth last; MTI-Net and the single-task networks likewise (last eighth
# <= 1.3 %; see README). Every run validates at each eighth of its
# schedule, and `convergence` shows in each study what still moved over the last quarter. An epoch
# trains in ~9 s for a single-task network, ~16 s for the MTL baseline, ~26 s for MTI-Net and ~38 s for
# PAD-Net (2-core CPU, fp32, one thread per run as `suite --jobs 2` gives); bf16 autocast, where the
# machine picks it (train.autocast_dtype), 1.15-1.9x faster.
# The detectors (04) have their own schedule: `detection_epochs` over `detection_num_train` images at
# 128x128 (DETECTOR). benchmarks/detection_curves.py measured the plain SSD at 28.9 % mAP@0.5 after 12
# epochs of 2000 images and still rising; 16 epochs of 2000 (2000 steps) is the study's schedule, the
# same in quick (SSD, flat MTL and ROCK, one seed) and full (every variant, 3 seeds).
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
    "quick": {**STUDY_MODELS, "epochs": 96, "detection_epochs": 16, "detection_num_train": 2000,
              "seeds": (0,),
              "cnn_widths": (16, 32, 48, 64), "batch_size": 16, "rsa_images": 64, "bootstrap": 200,
              "affinity_every": 25, "lr": 2e-3},
    # every variant of the papers' ablations, 3 seeds (mean ± std), the same schedule
    "full": {**STUDY_MODELS, "epochs": 96, "detection_epochs": 16, "detection_num_train": 2000,
             "seeds": (0, 1, 2),
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
    eighth of the schedule (eval_every = epochs / 8), unless `eval_every` is given: a learning curve
    and the convergence check (`convergence`) at a small cost."""
    s = study(profile)
    tasks = fields.get("tasks", TrainConfig.tasks)
    detector = "detection" in ((tasks,) if isinstance(tasks, str) else tuple(tasks))
    num_train = s.get("detection_num_train", s["num_train"]) if detector else s["num_train"]
    values = {"size": s["size"], "num_train": num_train, "num_val": s["num_val"],
              "epochs": s["detection_epochs" if detector else "epochs"], "batch_size": s["batch_size"],
              "lr": s["lr"], "seed": seed, "dataset": dataset, "data_dir": data_dir}
    values.update(fields)
    values.setdefault("eval_every", max(1, values["epochs"] // 8))
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


def variant_configs(variants: Mapping[str, Mapping], profile: str, seeds: Iterable[int] | None = None,
                    **common) -> dict[str, list[TrainConfig]]:
    """{label: [TrainConfig per seed]} for `variants` = {label: config overrides}, each on top of
    `base_config(profile, **common)` (the overrides win). Every config is validated here."""
    seeds = tuple(seeds if seeds is not None else study(profile)["seeds"])
    if not seeds:
        raise ValueError("seeds: at least one seed is needed")
    return {label: [base_config(profile, seed=seed, **{**common, **overrides}) for seed in seeds]
            for label, overrides in variants.items()}


def run_variants(variants: Mapping[str, Mapping], profile: str, seeds: Iterable[int] | None = None,
                 root=None, **common) -> dict[str, list[RunResult]]:
    """{label: [RunResult per seed]} for `variants` = {label: config overrides}, each on top of
    `base_config(profile, **common)`. All configs are validated before anything trains."""
    configs = variant_configs(variants, profile, seeds, **common)
    return {label: [run(c, root) for c in cs] for label, cs in configs.items()}


def run_single_task(profile: str, tasks: Iterable[str], seeds: Iterable[int] | None = None, root=None,
                    **common) -> dict[str, list[RunResult]]:
    """One single-task network per task (Δm's reference, RSA's networks): {task: [RunResult per seed]}."""
    return run_variants(single_task_variants(tasks), profile, seeds, root, **common)


# ---------------------------------------------------------------- what each study notebook trains
# The notebooks read their variants from here, and the suite trains the `planned_runs` of every notebook
# it executes before it executes them (suite.run_suite): one declaration, so that a notebook and the
# suite's scheduler cannot disagree. A variant is {TrainConfig field: value} on top of
# base_config(profile, **common), where `common` is the notebook's {"dataset", "data_dir", **overrides}.

DENSE_TASKS = ("semseg", "depth", "normals", "edge")  # the tasks of the dense studies (02, 03, 05)


def _for_profile(variants: dict[str, dict], labels: Mapping[str, list[str]],
                 profile: str | None) -> dict[str, dict]:
    """The `variants` that `profile` trains: those `labels[profile]` names, every one for a profile
    without an entry (full), and every one for profile None."""
    if profile is None:
        return variants
    study(profile)  # an unknown profile fails here, by name
    return {label: variants[label] for label in labels.get(profile, variants)}


def single_task_variants(tasks: Iterable[str]) -> dict[str, dict]:
    """One single-task network per task, labelled by the task."""
    return {task: {"model": "single_task", "tasks": (task,)} for task in tasks}


def single_run_config(profile: str, seed: int = 0, epochs: int | None = None,
                      overrides: Mapping | None = None, **fields) -> TrainConfig:
    """01's run: `fields` (model, tasks, backbone, weighting, model_options, dataset, data_dir) on the
    study's defaults (backbone None: the study's), `epochs` None: the profile's, `overrides` last."""
    fields = {**fields, "epochs": epochs or study(profile)["epochs"], **(overrides or {})}
    return base_config(profile, seed=seed, **fields)


# 01b · Does sharing help?
def sharing_variants() -> dict[str, dict]:
    """01b's hard vs soft sharing on DENSE_TASKS, one backbone and schedule, trained by every profile:
    the MTL baseline (03's run: one store entry) and MTAN (task attention over the shared backbone)."""
    return {"MTL baseline": {"model": "mtl_baseline", "tasks": DENSE_TASKS},
            "MTAN": {"model": "mtan", "tasks": DENSE_TASKS}}


# 02 · Task affinity per scale
# Task grouping (Standley et al. 2020): the MTL baseline on every pair of DENSE_TASKS, scored by Δ against
# the single-task networks. The six pair runs would add ~28 one-thread minutes to the quick plan (~4.6 each,
# suite.estimate_seconds), so quick trains none and 02 shows the affinity side of the grouping only.
PAIR_LABELS = {"quick": []}


def pair_variants(profile: str | None = None) -> dict[str, dict]:
    """02's grouping networks: the MTL baseline on each pair of DENSE_TASKS, labelled "semseg + depth" and
    so on, as `profile` trains them (None: every pair)."""
    pairs = [(a, b) for i, a in enumerate(DENSE_TASKS) for b in DENSE_TASKS[i + 1:]]
    variants = {f"{a} + {b}": {"model": "mtl_baseline", "tasks": (a, b)} for a, b in pairs}
    return _for_profile(variants, PAIR_LABELS, profile)


# 03 · MTI-Net ablation
CAPACITY = "MTL baseline, MTI-Net's size"  # the capacity control: the baseline with MTI-Net's parameters
MTINET_LABELS = {  # the variants each profile trains (full: every one)
    "ci": ["MTL baseline", CAPACITY, "PAD-Net", "MTI-Net", "MTI-Net w/o FPM"],
    "quick": ["MTL baseline", CAPACITY, "MTI-Net"],  # the core comparison at full's schedule
}
MTINET_AUX_MAIN = ("semseg", "depth")  # the auxiliary-task study: Δm over these two
MTINET_AUX_LABELS = {"ci": ["MTI-Net (semseg, depth)", "+ edge + normals (aux)"],
                     "quick": ["MTI-Net (semseg, depth)", "+ edge + normals (aux)"]}


def capacity_control(profile: str, tasks: Iterable[str] = DENSE_TASKS, **common) -> tuple[int, float]:
    """(task-head width, MTI-Net's parameter count): the `head_width` that gives the MTL baseline
    MTI-Net's parameters, for MTI-Net built as 03 trains it (profile settings, backbone, `common`)."""
    from .models.baselines import head_width_for

    tasks = tuple(tasks)
    mtinet = base_config(profile, model="mtinet", tasks=tasks, **common)
    params = resources(mtinet)["params (M)"] * 1e6
    width = head_width_for(params, tasks, backbone=mtinet.backbone, backbone_options=mtinet.backbone_options)
    return width, params


def mtinet_variants(head_width: int, profile: str | None = None) -> dict[str, dict]:
    """03's ablation on DENSE_TASKS as `profile` trains it (None: every variant); `head_width` is the
    capacity control's (`capacity_control`)."""
    variants = {
        "MTL baseline": {"model": "mtl_baseline"},
        CAPACITY: {"model": "mtl_baseline", "model_options": {"head_width": head_width}},
        "PAD-Net": {"model": "padnet"},  # its study options (task-feature width) come from base_config
        "MTI-Net": {"model": "mtinet"},
        "MTI-Net, 1 scale": {"model": "mtinet", "model_options": {"num_scales": 1}},
        "MTI-Net, 2 scales": {"model": "mtinet", "model_options": {"num_scales": 2}},
        "MTI-Net, 3 scales": {"model": "mtinet", "model_options": {"num_scales": 3}},
        "MTI-Net w/o FPM": {"model": "mtinet", "model_options": {"fpm": False}},
        "MTI-Net w/o distillation": {"model": "mtinet", "model_options": {"distillation": False}},
    }
    return _for_profile({k: {**v, "tasks": DENSE_TASKS} for k, v in variants.items()}, MTINET_LABELS, profile)


def mtinet_aux_variants(profile: str | None = None) -> dict[str, dict]:
    """03's auxiliary tasks: MTI-Net on MTINET_AUX_MAIN, alone and with edge / normals as auxiliary
    tasks, as `profile` trains them (None: every variant)."""
    main = MTINET_AUX_MAIN
    variants = {
        "MTI-Net (semseg, depth)": {"model": "mtinet", "tasks": main},
        "+ edge (aux)": {"model": "mtinet", "tasks": main + ("edge",),
                         "model_options": {"auxiliary_tasks": ["edge"]}},
        "+ normals (aux)": {"model": "mtinet", "tasks": main + ("normals",),
                            "model_options": {"auxiliary_tasks": ["normals"]}},
        "+ edge + normals (aux)": {"model": "mtinet", "tasks": DENSE_TASKS,
                                   "model_options": {"auxiliary_tasks": ["normals", "edge"]}},
    }
    return _for_profile(variants, MTINET_AUX_LABELS, profile)


# 04 · ROCK ablation
ROCK_TASKS = ("detection", "scene", "depth", "normals")  # the primary task first, then ROCK's auxiliaries
# every detector of 04: the small CNN (the dense studies' `hrnet` is not used for detection), its last
# stage kept at 1/4 by dilation, on 128x128 images (04's section 0 says why): the ROCK reference's
# relative grid (a 30x40 base map on 480x640 images), where 94 % of the validation objects have a prior
# at IoU >= 0.5 (7.5 % with the base map at 1/16 on 64x64 images); part of 04's `common`
DETECTOR = {"backbone": "cnn", "backbone_options": {"output_stride": 4}, "size": (128, 128)}
MISSING_FRACTION = 0.3  # 04's mixed data: share of sensor samples without each auxiliary annotation


def rock_variants(profile: str | None = None, dataset: str = "synthetic") -> dict[str, dict[str, dict]]:
    """04's variants by section (stride, main, alone, leave out, fusion, mixed) as `profile` trains them
    on `dataset` (None: every variant), each on top of DETECTOR. `full` adds the trained stride
    comparison, leave-one-out and two mixed-data controls; `quick` trains the main comparison only;
    the mixed-data study (sensor domain, validated on it) needs the synthetic benchmark."""
    if profile is not None:
        study(profile)  # an unknown profile fails here, by name
    every = profile in (None, "full")
    aux = ROCK_TASKS[1:]
    ssd = {"model": "ssd", "tasks": ("detection",)}
    rock = {"model": "rock", "tasks": ROCK_TASKS}
    sections = {
        "stride": {"SSD, 1/16": {**ssd, "backbone_options": {"output_stride": 16}}, "SSD, 1/4": ssd},
        "main": {"SSD": ssd, "flat MTL": {"model": "flat_mtl", "tasks": ROCK_TASKS}, "ROCK": rock},
        "alone": {f"ROCK, {t} only": {"model": "rock", "tasks": ("detection", t)} for t in aux},
        "leave out": {f"ROCK without {t}": {"model": "rock", "tasks": tuple(x for x in ROCK_TASKS if x != t)}
                      for t in aux},
        "fusion": {
            "ROCK, multiply": {**rock, "model_options": {"fusion": "multiply"}},
            "ROCK, concat": {**rock, "model_options": {"fusion": "concat"}},
            "ROCK, plain heads": {**rock, "model_options": {"intensive_pooling": False}},
        },
    }
    mixed = {"sensor only": {**rock, "train_domains": ("sensor",)},
             "sensor + render": {**rock, "train_domains": ("sensor", "render")}}
    # how much do the missing labels cost, and what does ROCK add on sensor data?
    mixed["sensor only, no missing labels"] = {**mixed["sensor only"], "missing_fraction": 0.0}
    mixed["SSD, sensor only"] = {**ssd, "train_domains": ("sensor",)}
    sections["mixed"] = {k: {"missing_fraction": MISSING_FRACTION, "val_domain": "sensor", **v}
                         for k, v in mixed.items()}
    if not every:
        sections["stride"], sections["leave out"] = {}, {}
        for label in ("sensor only, no missing labels", "SSD, sensor only"):
            sections["mixed"].pop(label)
    if profile == "quick":  # at the study's detection schedule quick affords the main comparison only
        sections["alone"], sections["fusion"], sections["mixed"] = {}, {}, {}
    if dataset != "synthetic":  # a single domain: no mixing study
        sections["mixed"] = {}
    return sections


# 05 · Loss weighting
WEIGHTING_LABELS = {  # the methods each profile trains (full: all of weighting.WEIGHTINGS)
    "ci": ["fixed", "uncertainty", "mgda"],
    "quick": ["fixed", "dwa", "mgda"],  # one of each kind, at full's schedule
}
STATIC_WEIGHTS = {  # static loss weights for the fixed method, beside the dataset's own
    "normals 3, edge 50 (a 3-epoch grid's)": {"normals": 3.0, "edge": 50.0},
    "normals 1, edge 20": {"normals": 1.0, "edge": 20.0},
    "normals 3, edge 5": {"normals": 3.0, "edge": 5.0},
}
EARLIER_WEIGHTS = "normals 3, edge 50 (a 3-epoch grid's)"  # what the benchmark used before LOSS_WEIGHTS
STATIC_LABELS = {"ci": [EARLIER_WEIGHTS], "quick": [EARLIER_WEIGHTS]}


def weighting_variants(profile: str | None = None) -> dict[str, dict]:
    """05's MTL baseline on DENSE_TASKS under each weighting method `profile` trains (None: all)."""
    from .weighting import WEIGHTINGS

    variants = {m: {"model": "mtl_baseline", "weighting": m, "tasks": DENSE_TASKS} for m in WEIGHTINGS}
    return _for_profile(variants, WEIGHTING_LABELS, profile)


def static_weight_variants(profile: str | None = None) -> dict[str, dict]:
    """05's fixed-weight MTL baseline under the STATIC_WEIGHTS `profile` trains (None: all)."""
    variants = {label: {"model": "mtl_baseline", "weighting": "fixed", "loss_weights": weights,
                        "tasks": DENSE_TASKS} for label, weights in STATIC_WEIGHTS.items()}
    return _for_profile(variants, STATIC_LABELS, profile)


# 06 · Inspector
def inspected_configs(profile: str, seed: int = 0, **common) -> dict[str, TrainConfig]:
    """06's default runs, {role: config}: MTI-Net on the dense tasks and, where the dataset has boxes,
    ROCK on its tasks, at the study's defaults. 06 shows a stored run like each (inspector.find_run) and
    trains the config itself only when none is stored."""
    from .data import dataset_tasks

    available = dataset_tasks(common.get("dataset", "synthetic"))
    dense = [t for t in DENSE_TASKS if t in available]
    wanted = {"MTI-Net": base_config(profile, model="mtinet", tasks=dense, seed=seed, **common)}
    if "detection" in available:  # ROCK needs boxes
        rock = [t for t in ROCK_TASKS if t in available]
        # on 04's detector (DETECTOR), so that 06 shows the ROCK that 04 trains
        wanted["ROCK"] = base_config(profile, model="rock", tasks=rock, seed=seed, **{**DETECTOR, **common})
    return wanted


# notebooks whose planned runs train only when no stored run is like them (inspector.find_run)
PICKS_STORED_RUNS = ("06_inspector",)
Plan = dict[str, list[TrainConfig]]  # {label: [TrainConfig per seed]}


def planned_runs(notebook: str, profile: str, **params) -> Plan:
    """{label: [TrainConfig per seed]}: every stored run `notebook` trains in `profile`, given its
    parameters `params` (any of its parameters cell but profile and output_dir; the cell's defaults for
    those not given). Labels are the notebook's, unique within it. The notebooks of PICKS_STORED_RUNS
    train theirs only when inspector.find_run finds no stored run like them."""
    if notebook not in _PLANS:
        raise ValueError(f"notebook {notebook!r}: no plan; choose from {list(_PLANS)}")
    return _PLANS[notebook](profile, **params)


def study_common(dataset: str, data_dir: str | None, overrides: Mapping | None, **fixed) -> dict:
    """The TrainConfig fields a study notebook puts under all its runs (its `common`): the notebook and
    its plan build them here, so that they cannot disagree."""
    return {"dataset": dataset, "data_dir": data_dir, **fixed, **(overrides or {})}


def _merge_sections(*sections: Plan) -> Plan:
    merged: Plan = {}
    for section in sections:
        clash = set(merged) & set(section)
        if clash:
            raise ValueError(f"labels {sorted(clash)} are declared twice in one notebook")
        merged.update(section)
    return merged


def _plan_data_tour(profile: str, seed: int = 0, data_dir: str | None = None, num_gallery: int = 4) -> Plan:
    study(profile)
    return {}  # the data tour trains nothing


def _plan_train(profile: str, seed: int = 0, dataset: str = "synthetic", data_dir: str | None = None,
                model: str = "mtinet", tasks: Iterable[str] = DENSE_TASKS, backbone: str | None = None,
                weighting: str = "fixed", epochs: int | None = None, model_options: Mapping | None = None,
                overrides: Mapping | None = None) -> Plan:
    config = single_run_config(profile, seed, epochs, overrides, model=model, tasks=tuple(tasks),
                               backbone=backbone, weighting=weighting,
                               model_options=dict(model_options or {}), dataset=dataset, data_dir=data_dir)
    return {config.model: [config]}


def _plan_sharing(profile: str, seeds: Iterable[int] | None = None, dataset: str = "synthetic",
                  data_dir: str | None = None, overrides: Mapping | None = None) -> Plan:
    # the single-task networks are 02/03/05's and the MTL baseline 03's: the store trains them once
    common = study_common(dataset, data_dir, overrides)
    return _merge_sections(*(variant_configs(v, profile, seeds, **common)
                             for v in (single_task_variants(DENSE_TASKS), sharing_variants())))


def _plan_affinity(profile: str, seed: int = 0, dataset: str = "synthetic", data_dir: str | None = None,
                   overrides: Mapping | None = None) -> Plan:
    # 02 also trains an MTL baseline to measure gradient affinity: a probe (affinity_probe), not a run.
    # Each task's single-task network at seed and seed + 1: the second training is RSA's same-task ceiling
    common = study_common(dataset, data_dir, overrides)
    return _merge_sections(
        variant_configs(single_task_variants(DENSE_TASKS), profile, (seed, seed + 1), **common),
        variant_configs(pair_variants(profile), profile, (seed,), **common))


def _plan_mtinet(profile: str, seeds: Iterable[int] | None = None, dataset: str = "synthetic",
                 data_dir: str | None = None, overrides: Mapping | None = None) -> Plan:
    common = study_common(dataset, data_dir, overrides)
    width, _ = capacity_control(profile, DENSE_TASKS, **common)
    return _merge_sections(*(variant_configs(v, profile, seeds, **common) for v in (
        single_task_variants(DENSE_TASKS), mtinet_variants(width, profile), mtinet_aux_variants(profile))))


def _plan_rock(profile: str, seeds: Iterable[int] | None = None, dataset: str = "synthetic",
               data_dir: str | None = None, overrides: Mapping | None = None) -> Plan:
    common = study_common(dataset, data_dir, overrides, **DETECTOR)
    return _merge_sections(*(variant_configs(v, profile, seeds, **common)
                             for v in rock_variants(profile, dataset).values()))


def _plan_weighting(profile: str, seeds: Iterable[int] | None = None, dataset: str = "synthetic",
                    data_dir: str | None = None, overrides: Mapping | None = None) -> Plan:
    # 05 also measures gradient cosines on the MTL baseline: 02's probe (affinity_probe), not a run
    common = study_common(dataset, data_dir, overrides)
    return _merge_sections(*(variant_configs(v, profile, seeds, **common) for v in (
        single_task_variants(DENSE_TASKS), weighting_variants(profile), static_weight_variants(profile))))


def _plan_inspector(profile: str, seed: int = 0, dataset: str = "synthetic", data_dir: str | None = None,
                    overrides: Mapping | None = None, image: int = 0) -> Plan:
    del image  # which validation image is shown: no run depends on it
    common = study_common(dataset, data_dir, overrides)
    return {role: [config] for role, config in inspected_configs(profile, seed, **common).items()}


def affinity_probe(profile: str, seed: int = 0, **common) -> tuple[TrainConfig, int]:
    """02's gradient-affinity measurement: the MTL baseline on DENSE_TASKS trained with an
    affinity.AffinityProbe every `affinity_every` steps. (config, every), for the notebook and its plan."""
    config = base_config(profile, model="mtl_baseline", tasks=DENSE_TASKS, seed=seed, **common)
    return config, study(profile)["affinity_every"]


Probes = dict[str, tuple[TrainConfig, int]]  # {label: (config, every)}: affinity.training_affinity's inputs


def _probes_affinity(profile: str, seed: int = 0, dataset: str = "synthetic", data_dir: str | None = None,
                     overrides: Mapping | None = None) -> Probes:
    return {"gradient affinity (MTL baseline)": affinity_probe(
        profile, seed, **study_common(dataset, data_dir, overrides))}


def _probes_weighting(profile: str, seeds: Iterable[int] | None = None, dataset: str = "synthetic",
                      data_dir: str | None = None, overrides: Mapping | None = None) -> Probes:
    seed = tuple(study(profile)["seeds"] if seeds is None else seeds)[0]  # the notebook's first seed
    return {"gradient conflict (MTL baseline)": affinity_probe(
        profile, seed, **study_common(dataset, data_dir, overrides))}


_PROBES = {"02_task_affinity_per_scale": _probes_affinity, "05_loss_weighting": _probes_weighting}


def planned_probes(notebook: str, profile: str, **params) -> Probes:
    """The affinity measurements `notebook` trains (affinity.training_affinity), given the same
    parameters as planned_runs: the suite trains them with the runs, before the notebooks."""
    if notebook not in _PLANS:
        raise ValueError(f"notebook {notebook!r}: no plan; choose from {list(_PLANS)}")
    return _PROBES[notebook](profile, **params) if notebook in _PROBES else {}


_PLANS = {"00_data_tour": _plan_data_tour, "01_train": _plan_train, "01b_sharing": _plan_sharing,
          "02_task_affinity_per_scale": _plan_affinity,
          "03_mtinet_ablation": _plan_mtinet, "04_rock_ablation": _plan_rock,
          "05_loss_weighting": _plan_weighting, "06_inspector": _plan_inspector}


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


def training_minutes(results: Mapping[str, list[RunResult]]) -> pd.Series:
    """Each variant's training cost in minutes, the mean over its seeds: CPU minutes when every run
    recorded them (an epoch's `cpu_seconds`), else wall-clock minutes. The Series' name says which.

    Wall-clock time depends on what else the machine ran meanwhile (a run that shared the cores with
    three others takes about twice as long); CPU time hardly does, so it is the one to compare."""
    runs = [r for rs in results.values() for r in rs]
    column = "cpu_seconds" if runs and all("cpu_seconds" in r.history for r in runs) else "seconds"
    minutes = {label: float(np.mean([r.history[column].sum() / 60 for r in rs])) if rs else math.nan
               for label, rs in results.items()}
    name = "train CPU min" if column == "cpu_seconds" else "train min (wall clock; varies with machine load)"
    return pd.Series(minutes, name=name)


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
    reference row for `metrics_table` / `delta_m_table` (what a predictor that ignores the image gets).
    Its `load_model()` is the fitted predictor, so it can be rescored like a network (e.g. by a one-seed
    bootstrap, bootstrap.DenseBootstrap)."""
    from .references import TrivialPredictor
    from .train import make_dataset

    tasks = tuple(tasks)
    reference = TrainConfig.from_dict({**config.to_dict(), "tasks": tasks})
    predictor = TrivialPredictor(make_dataset(reference, "train", reference.train_domains[0]), tasks)
    values = predictor.metrics(make_dataset(reference, "val", reference.val_domain),
                               protocol=eval_protocol(reference))
    flat = {f"{t}/{m}": v for t, ms in values.items() for m, v in ms.items()}
    result = _TrivialResult(reference, Path(TRIVIAL_LABEL), flat, pd.DataFrame(), trained=False,
                            predictor=predictor)
    return {TRIVIAL_LABEL: [result]}


@dataclass
class _TrivialResult(RunResult):
    """The trivial predictor's RunResult: nothing is stored, its model is the predictor itself."""

    predictor: object = None  # references.TrivialPredictor

    def load_model(self):
        return self.predictor


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
