"""Parameters and GMACs of the dense studies' models at the study settings, next to MTI-Net's paper.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sizes.py [--profile quick] [--paper-scale]

Models are built as the notebooks build them (experiments.base_config: backbone, widths, study options);
GMACs of one 64x64 image (models.summary.model_summary). The paper's numbers are MTI-Net's NYUD table
(HRNet-18, semseg + depth, 480x640). `--paper-scale` adds this code's models at that setting (timm's
hrnet_w18_small_v2, NYUD's 40 classes + depth, 480x640, each model's default options): about a minute.
"""

from __future__ import annotations

import argparse

import pandas as pd

from mtl_core import experiments
from mtl_core.models import build_model, model_summary
from mtl_core.tasks import make_task

TASKS = ("semseg", "depth", "normals", "edge")
PAPER = {"MTL baseline": (4.02, 12.8), "PAD-Net": (7.02, 70.3), "MTI-Net": (8.58, 17.1)}
ROWS = {**{f"single-task {t}": ("single_task", (t,), {}) for t in TASKS},
        "MTL baseline": ("mtl_baseline", TASKS, {}),
        "PAD-Net": ("padnet", TASKS, {}),
        "MTI-Net": ("mtinet", TASKS, {}),
        "MTI-Net, 1 scale": ("mtinet", TASKS, {"num_scales": 1}),
        "MTI-Net, 2 scales": ("mtinet", TASKS, {"num_scales": 2}),
        "MTI-Net, 3 scales": ("mtinet", TASKS, {"num_scales": 3}),
        "MTI-Net w/o FPM": ("mtinet", TASKS, {"fpm": False}),
        "MTI-Net w/o distillation": ("mtinet", TASKS, {"distillation": False})}


def measure(model, size) -> tuple[float, float]:
    total = model_summary(model, input_size=size).loc["total"]
    return float(total["params"]) / 1e6, float(total["gmacs"])


def study_sizes(profile: str) -> pd.DataFrame:
    rows = {}
    for label, (name, tasks, options) in ROWS.items():
        config = experiments.base_config(profile, model=name, tasks=tasks, model_options=options)
        model = build_model(name, config.tasks, backbone=config.backbone,
                            backbone_options=config.backbone_options, **config.model_options)
        rows[label] = measure(model, config.size)
    return pd.DataFrame(rows, index=["params (M)", "GMACs"]).T


def paper_scale_sizes() -> pd.DataFrame:
    nyud = {"semseg": make_task("semseg", num_classes=40), "depth": make_task("depth")}
    rows = {}
    for label, (name, tasks, options) in ROWS.items():
        if name == "single_task" and tasks[0] not in nyud:
            continue
        specs = {t: nyud[t] for t in tasks if t in nyud}
        rows[label] = measure(build_model(name, specs, backbone="hrnet_w18_small_v2", **options), (480, 640))
    return pd.DataFrame(rows, index=["params (M)", "GMACs"]).T


def with_ratios(table: pd.DataFrame) -> pd.DataFrame:
    base = table.loc["MTL baseline"]
    return table.assign(**{"params / baseline": table["params (M)"] / base["params (M)"],
                           "GMACs / baseline": table["GMACs"] / base["GMACs"]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick", choices=list(experiments.STUDY))
    parser.add_argument("--paper-scale", action="store_true")
    args = parser.parse_args()
    s = experiments.study(args.profile)
    print(f"study settings ({args.profile}): backbone {s['backbone']} widths {s['widths']}, "
          f"{s['size'][0]}x{s['size'][1]}, model options {s['model_options']}")
    table = with_ratios(study_sizes(args.profile))
    paper = with_ratios(pd.DataFrame(PAPER, index=["params (M)", "GMACs"]).T)
    table = table.join(paper.add_prefix("paper "))
    if args.paper_scale:
        table = table.join(with_ratios(paper_scale_sizes()).add_prefix("this code at paper scale "))
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table.round(3).to_string(na_rep="-"))


if __name__ == "__main__":
    main()
