"""What bf16 autocast does to a study's numbers: the same study runs trained in fp32 and in bf16.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/precision.py \
        [--models mtl_baseline ssd] [--fp32-seeds 0 1 2] [--bf16-seeds 0] [--epochs 24] [--jobs 2] \
        [--runs DIR]

Speed alone does not decide a precision: a faster run that lands somewhere else is a different study.
This script trains each model on its study settings (`experiments.base_config("full", ...)`: the dense
MTL baseline on the hrnet backbone, the study's epochs of 1000 64x64 images, or `--epochs`; the plain
SSD on 04's detection setting, 16 epochs of 2000 128x128 images) with `precision="fp32"` for
`--fp32-seeds` and `"bf16"` (autocast; only where the CPU runs it natively) for `--bf16-seeds`. Runs go
through the run store, so a study run that already finished in fp32 is read, not retrained.

How to read the output, per model:
- each primary metric (semseg mIoU, depth RMSE, normals mean angle, edge odsF; detection mAP@0.5) per
  seed and precision, and the training seconds per epoch (mean over epochs and runs);
- "bf16 - fp32 (same seed)": the change that bf16 alone makes, next to the fp32 seed-to-seed standard
  deviation (what changing the seed alone does). A change well inside that spread means bf16 moves the
  study's numbers less than its noise; `significance.compare` gives the verdict (Welch over seeds when
  both sides have two or more, otherwise "not separable").
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import pandas as pd

MODELS = {"mtl_baseline": ("semseg", "depth", "normals", "edge"), "ssd": ("detection",)}


def train(config_dict: dict, root: str | None) -> dict:
    """Train (or read) one run; its final metrics and seconds per epoch."""
    import torch

    from mtl_core import experiments
    from mtl_core.train import TrainConfig

    torch.set_num_threads(1)  # one thread per process: `--jobs` processes share the cores
    os.environ.setdefault("MTL_CORE_PROGRESS", "0")
    start = time.perf_counter()
    result = experiments.run(TrainConfig.from_dict(config_dict), root)
    seconds = [r["seconds"] for r in result.history.to_dict("records")]
    return {"metrics": result.metrics, "seconds_per_epoch": float(np.mean(seconds)),
            "trained": result.trained, "wall": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--fp32-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bf16-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of the dense runs (default: the study's; the detector keeps its own)")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained in parallel")
    parser.add_argument("--runs", default=None,
                        help="run store (default $MTL_CORE_RUNS or the project's runs/)")
    args = parser.parse_args()

    import torch

    from mtl_core import experiments
    from mtl_core.metrics import primary_metrics
    from mtl_core.significance import compare
    from mtl_core.tasks import make_tasks
    from mtl_core.train import autocast_dtype, eval_protocol, resolved_precision

    if autocast_dtype("bf16", torch.device("cpu")) is None:  # raises on a CPU without native bf16
        raise SystemExit("no native bf16 on this CPU")
    # fp32 as the study asks for it: "auto" where it resolves to fp32, so finished study runs are read
    fp32 = "auto" if resolved_precision("auto") == "fp32" else "fp32"
    jobs = []
    for model in args.models:
        for precision, seeds in (("bf16", args.bf16_seeds), ("fp32", args.fp32_seeds)):
            for seed in seeds:
                # a detector on 04's detection setting (image size, backbone stride), as the study trains it
                detector = "detection" in MODELS[model]
                setting = experiments.DETECTOR if detector else {}
                if args.epochs is not None and not detector:
                    setting = {"epochs": args.epochs}
                asked = fp32 if precision == "fp32" else precision
                config = experiments.base_config("full", model=model, tasks=MODELS[model], seed=seed,
                                                 precision=asked, **setting)
                jobs.append((model, precision, seed, config))
    print(f"{len(jobs)} runs, {args.jobs} at a time", flush=True)
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(train, c.to_dict(), args.runs) for *_, c in jobs]
        results = []
        for (model, precision, seed, _), future in zip(jobs, futures, strict=True):
            results.append(future.result())
            r = results[-1]
            print(f"done: {model} {precision} seed {seed} ({'trained' if r['trained'] else 'read'}, "
                  f"{r['wall']:.0f} s)", flush=True)

    for model in args.models:
        config = next(c for m, *_, c in jobs if m == model)
        specs = make_tasks(MODELS[model])
        primary = primary_metrics(specs, eval_protocol(config))
        rows = []
        for (m, precision, seed, _), r in zip(jobs, results, strict=True):
            if m != model:
                continue
            row = {"precision": precision, "seed": seed, "s/epoch": r["seconds_per_epoch"]}
            row.update({f"{t}/{names[0]}": r["metrics"][f"{t}/{names[0]}"] for t, names in primary.items()})
            rows.append(row)
        table = pd.DataFrame(rows).set_index(["precision", "seed"]).sort_index()
        print(f"\n## {model}\n{table.round(3).to_string()}")
        speed = table.loc["fp32", "s/epoch"].mean() / table.loc["bf16", "s/epoch"].mean()
        print(f"bf16 trains {speed:.2f}x as fast as fp32 (seconds per epoch; other load on the machine "
              "slows both)")
        for t, names in primary.items():
            column = f"{t}/{names[0]}"
            fp32, bf16 = table.loc["fp32", column], table.loc["bf16", column]
            same = [bf16[s] - fp32[s] for s in bf16.index if s in fp32.index]
            spread = fp32.std(ddof=1) if len(fp32) > 1 else float("nan")
            verdict = compare(bf16.to_numpy(), fp32.to_numpy(), "bf16", "fp32",
                              higher_is_better=specs[t].higher_is_better[names[0]])
            print(f"{column}: bf16 - fp32 (same seed) {', '.join(f'{d:+.3f}' for d in same)}; fp32 seed "
                  f"std {spread:.3f}; {verdict.text}")


if __name__ == "__main__":
    main()
