"""Detection learning curves: mAP@0.5 on the validation split against training steps, for the plain SSD,
flat MTL and ROCK trained in the same regime.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/detection_curves.py \\
        [--epochs 12] [--num-train 1000] [--size 128 128] [--output-stride 4] [--seeds 0] [--jobs 2] \\
        [--models SSD "flat MTL" ROCK] [--eval-every 1] [--profile full] [--runs DIR] \\
        [--out /tmp/mtl_bench/detection_curves.csv]

(Set MTL_CORE_RUNS / MTL_CORE_DATA to keep its runs and renders out of the project's store.)

What it trains: each model on `experiments.base_config(profile, ...)`, i.e. the study's detection settings
(the `cnn` detector backbone at the profile's `cnn_widths`, its lr, batch size 16, cosine schedule over
the whole run, augmentation) with `--epochs`, `--num-train` and the image `--size` given here, the
backbone's last map kept at `--output-stride` (`SimpleCNN(output_stride=...)`) and the SSD head's
defaults (ROCK's reference head and default boxes, `models.detection.SSDHead`). SSD trains detection
alone; flat MTL and ROCK add scene, depth and normals (ROCK's reference losses and weights). All three
share the priors, the schedule and the data. The validation split (the profile's `num_val` images,
rendered at `--size`) is scored every `--eval-every` epochs. The datasets are rendered once, before the
runs start; runs go through the run store (`--runs`, default $MTL_CORE_RUNS or the project's runs/),
so a finished run is read, not retrained, and an interrupted one resumes.

How to read the output:
- the table: mAP@0.5 (%) per model (rows, mean over seeds) after each evaluation (columns: the epoch
  and the optimisation steps so far, `num_train // 16` steps per epoch). The learning rate follows one
  cosine over the whole run, so epoch 4 of a 12-epoch run is not a 4-epoch run: its rate has not
  decayed yet, and the last evaluations gain from the decay;
- the prior coverage of each model at `--size`: the share of validation objects that have a default
  box at IoU >= 0.5 (an object without one is learnt from a single forced match only);
- training seconds per epoch (mean over runs; with `--jobs 2` both cores are busy, and other load on
  the machine slows them further).
The CSV `--out` holds every evaluation: model, seed, epoch, step, map50, map (mAP@[.5:.95]) and the
training seconds of that epoch.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pandas as pd

ROCK_TASKS = ("detection", "scene", "depth", "normals")
MODELS = {"SSD": ("ssd", ("detection",)), "flat MTL": ("flat_mtl", ROCK_TASKS), "ROCK": ("rock", ROCK_TASKS)}


def train_history(config_dict: dict, root: str | None) -> dict:
    """Train (or read) one run; its per-epoch history."""
    import torch

    from mtl_core import experiments
    from mtl_core.train import TrainConfig

    # one thread per process: `--jobs` processes share the cores instead of fighting over them
    torch.set_num_threads(1)
    os.environ.setdefault("MTL_CORE_PROGRESS", "0")  # one line per epoch, no progress bars
    start = time.perf_counter()
    result = experiments.run(TrainConfig.from_dict(config_dict), root)
    return {"history": result.history.to_dict("records"), "trained": result.trained,
            "wall_seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="full", help="the study profile whose settings are used")
    parser.add_argument("--epochs", type=int, default=12, help="epochs of every run (default 12)")
    parser.add_argument("--num-train", type=int, default=None,
                        help="training images (default: the profile's)")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"),
                        help="image size, multiples of 32 (default 128 128)")
    parser.add_argument("--output-stride", type=int, default=4,
                        help="stride of the detectors' base map, 4, 8, 16 or 32 (default 4)")
    parser.add_argument("--eval-every", type=int, default=1, help="validate every N epochs (default 1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--jobs", type=int, default=2, help="runs trained in parallel")
    parser.add_argument("--runs", default=None,
                        help="run store (default: $MTL_CORE_RUNS or the project's runs/)")
    parser.add_argument("--out", default="/tmp/mtl_bench/detection_curves.csv", help="CSV of the curves")
    args = parser.parse_args()

    import torch

    from mtl_core import detection_study, experiments
    from mtl_core.models import build_model
    from mtl_core.train import make_datasets

    torch.set_num_threads(1)
    start = time.perf_counter()
    fields = {"epochs": args.epochs, "size": tuple(args.size), "eval_every": args.eval_every,
              "backbone_options": {"output_stride": args.output_stride}}
    if args.num_train is not None:
        fields["num_train"] = args.num_train
    jobs = [(label, seed) for label in args.models for seed in args.seeds]
    configs = [experiments.base_config(args.profile, model=MODELS[label][0], tasks=MODELS[label][1],
                                       seed=seed, **fields) for label, seed in jobs]
    steps_per_epoch = configs[0].num_train // configs[0].batch_size  # drop_last: full batches only

    # render the data once here, not in every worker; then the priors each model uses, on that data
    _, val, _ = make_datasets(configs[0])
    boxes = detection_study.gt_boxes(val)
    models = {label: build_model(c.model, c.tasks, backbone=c.backbone, backbone_options=c.backbone_options,
                                 **c.model_options) for (label, _), c in zip(jobs, configs, strict=True)}
    coverage = detection_study.prior_coverage(boxes, configs[0].size, models=models)
    print(f"{len(configs)} runs of {args.epochs} epochs x {steps_per_epoch} steps, {configs[0].num_train} "
          f"training images at {configs[0].size[0]}x{configs[0].size[1]}, base map 1/{args.output_stride}, "
          f"seeds {args.seeds}, {args.jobs} at a time", flush=True)

    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(train_history, c.to_dict(), args.runs) for c in configs]
        results = []
        for (label, seed), future in zip(jobs, futures, strict=True):
            results.append(future.result())
            print(f"done: {label} seed {seed} ({'trained' if results[-1]['trained'] else 'read'}, "
                  f"{results[-1]['wall_seconds']:.0f} s)", flush=True)

    rows = []
    for (label, seed), r in zip(jobs, results, strict=True):
        for record in r["history"]:
            if "detection/map50" in record and pd.notna(record["detection/map50"]):
                epoch = int(record["epoch"])
                rows.append({"model": label, "seed": seed, "epoch": epoch, "step": epoch * steps_per_epoch,
                             "map50": record["detection/map50"], "map": record["detection/map"],
                             "seconds": record["seconds"]})
    curves = pd.DataFrame(rows)
    table = curves.groupby(["model", "epoch", "step"])["map50"].mean().unstack(["epoch", "step"])
    table = table.reindex(args.models)
    table.columns = [f"ep {e} / {s} steps" for e, s in table.columns]
    seconds = pd.DataFrame([{"model": label, "seconds": record["seconds"]}
                            for (label, _), r in zip(jobs, results, strict=True) for record in r["history"]])
    seconds = seconds.groupby("model")["seconds"].mean()

    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.precision", 2):
        print(f"\nmAP@0.5 (%) on {len(val)} validation images, mean over seeds {args.seeds}:")
        print(table.to_string())
        print(f"\nprior coverage of each model on the validation objects ({len(boxes)} boxes):")
        print(coverage.to_string())
        print("\ntraining seconds per epoch (mean over runs; shared cores, slowed by any other load):")
        print(seconds.reindex(args.models).to_string())

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    curves.to_csv(out, index=False)
    print(f"\nwrote {out} ({time.perf_counter() - start:.0f} s wall)")


if __name__ == "__main__":
    main()
