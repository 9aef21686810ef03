"""Learning curves on the synthetic benchmark: each task's validation primary metric after every epoch, for
the four single-task networks, the MTL baseline and MTI-Net, and when each curve has converged.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/learning_curves.py [--epochs 96] [--seeds 0 1]
        [--eval-every N] [--loss-weights '{"semseg": 1, "depth": 1, "normals": 3, "edge": 50}']
        [--jobs 2] [--tol 0.02] [--runs DIR] [--out /tmp/mtl_bench/learning_curves.csv]

What it trains: every model on the `full` study settings (experiments.base_config: hrnet backbone, 1000
64x64 training images, batch 16 -> 62 steps per epoch, the last partial batch dropped; lr 2e-3, cosine
schedule over the whole run), one run per model and seed with the validation metrics computed as the
study schedules them (every eighth of the run, on the notebooks' 300 validation images) unless
`--eval-every` is given. With the default weights and evaluation, a run here *is* the study's run (same
config, same hash): `--runs` pointing at the project's run store (the default, as the notebooks use)
lets the notebooks reuse it. Every model gets the loss weights `--loss-weights` (default: the
benchmark's own, chosen by benchmarks/task_weights.py); a single-task network gets its own task's
weight. Note that the cosine schedule spans `--epochs`: epoch 8 of a 16-epoch run
is not an 8-epoch run (its learning rate has not decayed yet).

How to read the output:
- per model and task, the primary metric (semseg mIoU, depth RMSE, normals mean angle in degrees, edge
  odsF) after each epoch, the mean over seeds;
- convergence: E_2% is the first epoch from which the (seed-mean) curve stays within `--tol` (relative)
  of its final value; per seed too. "last quarter" is the relative change between epoch
  round(0.75 * epochs) and the last epoch of each run, and whether it is below `--tol` (the criterion
  "primary metrics change by less than 2 % relative over the last quarter of training");
- Δm (%) of the MTL baseline and MTI-Net after each epoch, against the single-task networks after the
  same epoch (per seed against their seed-mean, then mean and std over seeds), and each task's Δ.
CSVs: `--out` holds every curve point (model, task, metric, seed, epoch, step, value); next to it,
`<name>_convergence.csv` and `<name>_delta_m.csv` hold the two other tables.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

# the synthetic benchmark's own weights (chosen by benchmarks/task_weights.py), defined once in the package
from mtl_core.data.synthetic import LOSS_WEIGHTS as CHOSEN_WEIGHTS

TASKS = ("semseg", "depth", "normals", "edge")
MODELS = {"single-task": "single_task", "MTL baseline": "mtl_baseline", "MTI-Net": "mtinet"}


def train_history(config_dict: dict, root: str) -> dict:
    """Train (or read) one run; its per-epoch history."""
    import torch

    from mtl_core import experiments
    from mtl_core.train import TrainConfig

    # one thread per process: `--jobs` processes share the cores instead of fighting over them
    torch.set_num_threads(1)
    os.environ.setdefault("MTL_CORE_PROGRESS", "0")  # one line per epoch, no progress bars
    start = time.perf_counter()
    result = experiments.run(TrainConfig.from_dict(config_dict), root)
    return {"config": config_dict, "history": result.history.to_dict("records"), "trained": result.trained,
            "wall_seconds": time.perf_counter() - start}


def first_stable_epoch(values: pd.Series, tol: float) -> int:
    """The first epoch from which every value is within `tol` (relative) of the last one."""
    inside = ((values - values.iloc[-1]).abs() <= tol * abs(values.iloc[-1])).to_numpy()
    # the last epoch outside the band, plus one (the final value is always inside)
    outside = np.flatnonzero(~inside)
    return int(values.index[outside[-1] + 1]) if len(outside) else int(values.index[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of every run (default: the study's, experiments.STUDY)")
    parser.add_argument("--eval-every", type=int, default=None,
                        help="validate every N epochs (default: the study's, every eighth of the run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--loss-weights", type=json.loads, default=CHOSEN_WEIGHTS,
                        help=f"JSON {{task: weight}} (default {json.dumps(CHOSEN_WEIGHTS)})")
    parser.add_argument("--tol", type=float, default=0.02, help="relative convergence band (default 0.02)")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained in parallel")
    parser.add_argument("--runs", default=None,
                        help="run store (default: the notebooks', $MTL_CORE_RUNS or the project's runs/)")
    parser.add_argument("--out", default="/tmp/mtl_bench/learning_curves.csv", help="CSV of the curves")
    args = parser.parse_args()

    from mtl_core import experiments

    args.epochs = args.epochs or experiments.study("full")["epochs"]
    from mtl_core.metrics import delta_m, primary_metrics
    from mtl_core.tasks import make_tasks
    from mtl_core.train import eval_protocol

    start = time.perf_counter()
    weights = {t: float(args.loss_weights[t]) for t in TASKS}

    def config(label: str, tasks: tuple, seed: int):
        # the benchmark's own weights and the study's evaluation leave the config as the study builds it;
        # anything else is explicit in the config (and so in its run-store hash); a single task trains
        # at weight 1 whatever the weights (tasks.make_tasks)
        explicit = weights != CHOSEN_WEIGHTS and len(tasks) > 1
        fields = {"loss_weights": {t: weights[t] for t in tasks}} if explicit else {}
        if args.eval_every is not None:
            fields["eval_every"] = args.eval_every
        return experiments.base_config("full", model=MODELS[label], tasks=tasks, epochs=args.epochs,
                                       seed=seed, **fields)

    # the longest runs first, so that the workers finish close together
    jobs = [("MTI-Net", TASKS, s) for s in args.seeds] + [("MTL baseline", TASKS, s) for s in args.seeds]
    jobs += [("single-task", (t,), s) for t in TASKS for s in args.seeds]
    configs = [config(*job) for job in jobs]
    steps_per_epoch = configs[0].num_train // configs[0].batch_size  # drop_last: full batches only
    specs = make_tasks(TASKS)
    primary = {t: m[0] for t, m in primary_metrics(specs, eval_protocol(configs[0])).items()}
    print(f"{len(configs)} runs of {args.epochs} epochs ({steps_per_epoch} steps each), seeds {args.seeds}, "
          f"loss weights {json.dumps(weights)}, {args.jobs} at a time", flush=True)

    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(train_history, c.to_dict(), args.runs) for c in configs]
        results = []
        for (label, tasks, seed), future in zip(jobs, futures, strict=True):
            results.append(future.result())
            print(f"done: {label} {'+'.join(tasks)} seed {seed} "
                  f"({'trained' if results[-1]['trained'] else 'read'}, {results[-1]['wall_seconds']:.0f} s)",
                  flush=True)

    rows, seconds = [], []
    for (label, tasks, seed), r in zip(jobs, results, strict=True):
        for record in r["history"]:
            seconds.append({"model": label, "seed": seed, "seconds": record["seconds"]})
            for t in tasks:
                rows.append({"model": label, "task": t, "metric": primary[t], "seed": seed,
                             "epoch": int(record["epoch"]), "step": int(record["epoch"]) * steps_per_epoch,
                             "value": record[f"{t}/{primary[t]}"]})
    # epochs without a validation (the study validates every eighth of the run) carry no point
    curves = pd.DataFrame(rows).dropna(subset=["value"])
    evaluated = sorted(curves.epoch.unique())
    order = list(MODELS)
    mean = curves.groupby(["model", "task", "epoch"])["value"].mean().unstack("epoch")
    mean = mean.reindex([(m, t) for m in order for t in TASKS])

    # convergence: on the seed-mean curve, per seed, and the last-quarter check of each run
    # the latest validation at or before 3/4 of the run, as experiments.convergence reads it
    quarter = max(e for e in evaluated if e <= round(0.75 * args.epochs))
    summary = []
    for (label, task), row in mean.iterrows():
        entry = {"model": label, "task": task, "metric": primary[task], "final (mean)": row.iloc[-1],
                 "E_2% (mean curve)": first_stable_epoch(row, args.tol),
                 f"last quarter change % (mean, epoch {quarter}->{args.epochs})":
                     100 * abs(row[args.epochs] - row[quarter]) / abs(row[args.epochs])}
        for seed in args.seeds:
            run = curves[(curves.model == label) & (curves.task == task) & (curves.seed == seed)]
            run = run.set_index("epoch")["value"]
            change = abs(run[args.epochs] - run[quarter]) / abs(run[args.epochs])
            entry[f"E_2% seed {seed}"] = first_stable_epoch(run, args.tol)
            entry[f"last quarter change % seed {seed}"] = 100 * change
            entry[f"last quarter < {args.tol:.0%} seed {seed}"] = bool(change < args.tol)
        summary.append(entry)
    summary = pd.DataFrame(summary)

    # Δm after each epoch: per seed against the seed-mean of the single-task networks after that epoch
    reference = curves[curves.model == "single-task"].groupby(["task", "epoch"])["value"].mean()
    dm_rows = []
    for label in ("MTL baseline", "MTI-Net"):
        for epoch in evaluated:
            per_seed = {}
            for seed in args.seeds:
                got = curves[(curves.model == label) & (curves.seed == seed) & (curves.epoch == epoch)]
                values = {t: {primary[t]: v} for t, v in zip(got.task, got.value, strict=True)}
                base = {t: {primary[t]: reference[(t, epoch)]} for t in TASKS}
                per_seed[seed] = {"delta_m": delta_m(values, base, specs),
                                  **{f"Δ {t}": delta_m(values, {t: base[t]}, {t: specs[t]}) for t in TASKS}}
            frame = pd.DataFrame(per_seed).T
            dm_rows.append({"model": label, "epoch": epoch, "step": epoch * steps_per_epoch,
                            "delta_m": frame["delta_m"].mean(), "delta_m_std": frame["delta_m"].std(ddof=0),
                            **{f"delta_m seed {s}": frame.loc[s, "delta_m"] for s in args.seeds},
                            **{k: frame[k].mean() for k in frame.columns if k.startswith("Δ")}})
    dm = pd.DataFrame(dm_rows)

    time_table = pd.DataFrame(seconds).groupby("model")["seconds"].mean().reindex(order)
    display = ("display.width", 300, "display.max_columns", 40, "display.float_format", "{:.4f}".format)
    with pd.option_context(*display):
        print(f"\nprimary validation metric after each epoch (columns; x{steps_per_epoch} = steps), "
              f"mean over seeds {args.seeds}:")
        print(mean.to_string())
        print(f"\nconvergence (band {args.tol:.0%} relative to the final value):")
        print(summary.set_index(["model", "task"]).T.to_string())
        print("\nΔm (%) vs the single-task networks after the same epoch "
              "(mean, std over seeds; Δ per task: mean):")
        print(dm.set_index(["model", "epoch"]).to_string())
        print("\ntraining seconds per epoch (mean over runs, both workers busy):")
        print(time_table.to_string())

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    curves.to_csv(out, index=False)
    summary.to_csv(out.with_name(f"{out.stem}_convergence.csv"), index=False)
    dm.to_csv(out.with_name(f"{out.stem}_delta_m.csv"), index=False)
    print(f"\nwrote {out}, {out.with_name(f'{out.stem}_convergence.csv')}, "
          f"{out.with_name(f'{out.stem}_delta_m.csv')} ({time.perf_counter() - start:.0f} s wall)")


if __name__ == "__main__":
    main()
