"""Loss weights for the synthetic benchmark's dense tasks (semseg, depth, normals, edge): one set, chosen
by a grid on the MTL baseline and scored by Δm on held-out tuning images, for every multi-task model alike.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/task_weights.py [--epochs 96] [--normals 3 10 30]
        [--edge 20 50] [--jobs 2] [--confirm-top 2] [--confirm-seeds 1]
        [--runs /tmp/mtl_bench_runs] [--out /tmp/mtl_bench/task_weights.csv]

What it trains: the MTL baseline on the `full` study settings (experiments.base_config: hrnet backbone,
1000 64x64 training images, batch 16, lr 2e-3, cosine schedule) for `--epochs` epochs, seed 0, once per
(normals, edge) weight pair, with semseg and depth at weight 1; and the four single-task networks (same
settings, weight 1: a network with one loss has no balance to strike) as Δm's reference. Then the
`--confirm-top` best pairs are trained again with the `--confirm-seeds`, to see whether their order
survives a change of seed.

Where it scores: the notebooks report on the validation images (split "val", data seed 0); choosing
weights on them would tune to the numbers being reported. The tuning images are the same validation
distribution rendered from another seed (split "val", seed `--tune-seed`, default 1): other rooms, and
no training image (training uses split "train"). Each trained model is evaluated on them with the
training loop's own `train.evaluate`, under the runs' evaluation protocol.

How to read the output:
- the grid table: Δm (%) on the tuning images, each task's relative change Δ (%) of its primary metric
  (mIoU, depth RMSE, normals mean angle, edge odsF; positive = better than the single-task network),
  and Δm on the validation images for comparison (not used for the choice);
- the chosen weights: the argmax of tuning Δm (among the confirmed pairs: of its mean over seeds);
- separability: the spread of Δm over the grid and the gap between the best two, next to the
  seed-to-seed change of Δm of the same weights, and the study notebooks' verdict on the best two
  (significance.compare: Welch's t over their seeds, the seed-to-seed range as noise floor). "Not
  separable" means these runs cannot tell the top choices apart: either is as good a choice.
The CSV (`--out`) has one row per trained run and image set (tune / val): weights, seed, Δm, each
task's Δ and primary metric. Runs go to the run store `--runs` (reused when the script runs again).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pandas as pd

TASKS = ("semseg", "depth", "normals", "edge")


def configure_worker() -> None:
    # one thread per process: `--jobs` processes share the cores instead of fighting over them
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("MTL_CORE_PROGRESS", "0")  # one line per epoch, no progress bars


def tuning_set(config, images: int, seed: int):
    """The held-out tuning images: the validation split rendered from another seed."""
    from mtl_core.train import TrainConfig, make_dataset

    sized = TrainConfig.from_dict({**config.to_dict(), "num_val": images})
    return make_dataset(sized, "val", config.val_domain, seed=seed)


def train_and_score(config_dict: dict, root: str, images: int, seed: int) -> dict:
    """Train (or read) one run, then its metrics on the tuning images (kept in the run's directory,
    so a second call only reads them)."""
    import torch
    from torch.utils.data import DataLoader

    from mtl_core import experiments
    from mtl_core.data import collate_batch
    from mtl_core.tasks import make_tasks
    from mtl_core.train import TrainConfig, eval_protocol, evaluate

    configure_worker()
    start = time.perf_counter()
    result = experiments.run(TrainConfig.from_dict(config_dict), root)
    cached = result.directory / f"tuning-val-seed{seed}-n{images}.json"
    if cached.exists():
        tune = json.loads(cached.read_text())
    else:
        data = tuning_set(result.config, images, seed)
        loader = DataLoader(data, batch_size=result.config.batch_size, collate_fn=collate_batch)
        tasks = make_tasks(result.config.tasks, dataset=data, weights=result.config.loss_weights)
        tune = evaluate(result.load_model(), loader, tasks, torch.device("cpu"), None,
                        eval_protocol(result.config))
        cached.write_text(json.dumps(tune, indent=1))
    train_seconds = float(result.history["seconds"].sum()) if "seconds" in result.history else float("nan")
    return {"config": config_dict, "val": result.metrics, "tune": tune, "trained": result.trained,
            "train_seconds": train_seconds, "wall_seconds": time.perf_counter() - start}


def run_all(configs: list, args) -> list[dict]:
    """Every config through `train_and_score`, `--jobs` at a time (spawned processes: a clean torch)."""
    jobs = [(c.to_dict(), args.runs, args.tune_images, args.tune_seed) for c in configs]
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(train_and_score, *job) for job in jobs]
        out = []
        for future in futures:
            out.append(future.result())
            c = out[-1]["config"]
            how = "trained" if out[-1]["trained"] else "read"
            print(f"done: {c['model']} {list(c['tasks'])} weights {c['loss_weights']} seed {c['seed']} "
                  f"({how}, {out[-1]['wall_seconds']:.0f} s)", flush=True)
    return out


def score(metrics: dict, reference: dict, specs: dict, primary: dict) -> dict:
    """Δm (%) over all tasks and each task's Δ (%) of its primary metric, vs the single-task reference."""
    from mtl_core.experiments import _unflatten
    from mtl_core.metrics import delta_m

    values = _unflatten(metrics)
    row = {"delta_m": delta_m(values, reference, specs, primary)}
    for t in specs:  # the same formula restricted to one task: its relative change
        row[f"Δ {t}"] = delta_m(values, {t: reference[t]}, {t: specs[t]}, {t: primary[t]})
    for t in specs:
        row[f"{t}/{primary[t][0]}"] = values[t][primary[t][0]]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=96,
                        help="training epochs of every run (default 96, the study schedule: a short "
                             "schedule ranks weights by how fast, not how well, the tasks learn)")
    parser.add_argument("--normals", type=float, nargs="+", default=[3, 10, 30], help="normals weights")
    parser.add_argument("--edge", type=float, nargs="+", default=[20, 50], help="edge weights")
    parser.add_argument("--seed", type=int, default=0, help="seed of the grid runs")
    parser.add_argument("--confirm-top", type=int, default=2, help="re-run the best N pairs (0: none)")
    parser.add_argument("--confirm-seeds", type=int, nargs="*", default=[1], help="their extra seeds")
    parser.add_argument("--tune-seed", type=int, default=1, help="data seed of the tuning images")
    parser.add_argument("--tune-images", type=int, default=300, help="number of tuning images")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained in parallel")
    parser.add_argument("--runs", default=os.environ.get("MTL_CORE_RUNS", "/tmp/mtl_bench_runs"),
                        help="run store (default $MTL_CORE_RUNS, else /tmp/mtl_bench_runs)")
    parser.add_argument("--out", default="/tmp/mtl_bench/task_weights.csv", help="CSV of every run")
    args = parser.parse_args()

    from mtl_core import experiments
    from mtl_core.metrics import primary_metrics
    from mtl_core.significance import compare
    from mtl_core.tasks import make_tasks
    from mtl_core.train import eval_protocol

    start = time.perf_counter()

    def mtl(normals: float, edge: float, seed: int):
        weights = {"semseg": 1.0, "depth": 1.0, "normals": float(normals), "edge": float(edge)}
        return experiments.base_config("full", model="mtl_baseline", tasks=TASKS, epochs=args.epochs,
                                       eval_every=1, seed=seed, loss_weights=weights)

    grid = list(itertools.product(args.normals, args.edge))
    # the weights are explicit in every config (and so in its run-store hash): the dataset's default
    # weights may change after this script has chosen new ones
    # validated after every epoch (cheap): the run histories show how far each run still moved
    singles = [experiments.base_config("full", model="single_task", tasks=(t,), epochs=args.epochs,
                                       eval_every=1, seed=args.seed, loss_weights={t: 1.0})
               for t in TASKS]
    specs = make_tasks(TASKS)
    primary = primary_metrics(specs, eval_protocol(singles[0]))
    tuning_set(singles[0], args.tune_images, args.tune_seed)  # render it once, before the workers start

    # the longest runs first, so that the two workers finish close together
    results = run_all([mtl(n, e, args.seed) for n, e in grid] + singles, args)
    single_results = results[len(grid):]
    reference = {split: {t: experiments._unflatten(r[split])[t]
                         for t, r in zip(TASKS, single_results, strict=True)}
                 for split in ("tune", "val")}

    rows = []
    for r in results:
        c = r["config"]
        for split in ("tune", "val"):
            row = {"model": c["model"], "tasks": "+".join(c["tasks"]), "seed": c["seed"], "images": split,
                   **{f"w_{t}": c["loss_weights"].get(t) for t in TASKS},
                   "train_seconds": r["train_seconds"]}
            if c["model"] == "mtl_baseline":
                row.update(score(r[split], reference[split], specs, primary))
            else:
                task = c["tasks"][0]
                row[f"{task}/{primary[task][0]}"] = experiments._unflatten(r[split])[task][primary[task][0]]
            rows.append(row)
    table = pd.DataFrame(rows)

    def mtl_rows(images: str) -> pd.DataFrame:
        return table[(table.model == "mtl_baseline") & (table.images == images)]

    shown = ["delta_m"] + [f"Δ {t}" for t in TASKS] + [f"{t}/{primary[t][0]}" for t in TASKS]
    seed0 = mtl_rows("tune")[lambda d: d.seed == args.seed].set_index(["w_normals", "w_edge"])
    seed0_val = mtl_rows("val")[lambda d: d.seed == args.seed].set_index(["w_normals", "w_edge"])
    grid_table = seed0[shown].assign(**{"val delta_m": seed0_val["delta_m"]})
    grid_table = grid_table.sort_values("delta_m", ascending=False)
    display = ("display.width", 250, "display.max_columns", 30, "display.float_format", "{:.3f}".format)
    with pd.option_context(*display):
        print(f"\nsingle-task reference (seed {args.seed}, {args.epochs} epochs, weight 1), primary metrics:")
        for split in ("tune", "val"):
            print(f"  {split}: " + ", ".join(f"{t}/{primary[t][0]} {reference[split][t][primary[t][0]]:.4f}"
                                             for t in TASKS))
        print(f"\nMTL baseline grid, seed {args.seed}, {args.epochs} epochs (semseg, depth weight 1); "
              f"Δ in % vs the single-task networks on the tuning images (val delta_m: on the notebooks' "
              f"validation images, not used for the choice), best first:")
        print(grid_table.to_string())

    values = grid_table["delta_m"]
    top = list(values.index[:max(args.confirm_top, 1)])
    print(f"\ngrid spread of tuning Δm: {values.max() - values.min():.3f} points (best {values.max():.3f}, "
          f"worst {values.min():.3f}); gap best - second: {values.iloc[0] - values.iloc[1]:.3f} points")

    chosen = top[0]
    if args.confirm_top > 0 and args.confirm_seeds:
        confirm = run_all([mtl(n, e, s) for n, e in top for s in args.confirm_seeds], args)
        extra = []
        for r in confirm:
            c = r["config"]
            for split in ("tune", "val"):
                extra.append({"model": c["model"], "tasks": "+".join(c["tasks"]), "seed": c["seed"],
                              "images": split, **{f"w_{t}": c["loss_weights"].get(t) for t in TASKS},
                              "train_seconds": r["train_seconds"],
                              **score(r[split], reference[split], specs, primary)})
        table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)
        per_seed = mtl_rows("tune").pivot_table(index=["w_normals", "w_edge"], columns="seed",
                                                values="delta_m").loc[top]
        seeds = list(per_seed.columns)
        # the same weights under another seed: how much Δm moves by chance alone
        seed_change = per_seed[seeds].max(axis=1) - per_seed[seeds].min(axis=1)
        per_seed["mean"] = per_seed[seeds].mean(axis=1)
        per_seed["seed range"] = seed_change
        with pd.option_context(*display):
            print(f"\nthe best {len(top)} pairs again with seed(s) {args.confirm_seeds}: "
                  "tuning Δm (%) per seed")
            print(per_seed.to_string())
        chosen = per_seed["mean"].idxmax()
        means = per_seed["mean"].sort_values(ascending=False)
        if len(means) > 1:
            # the study notebooks' rule (significance.compare): Welch's t over the seeds, and never a
            # result when the gap is no larger than what a change of seed alone moves Δm
            best, second = means.index[0], means.index[1]
            verdict = compare(per_seed.loc[best, seeds], per_seed.loc[second, seeds],
                              f"normals {best[0]:g} / edge {best[1]:g}",
                              f"normals {second[0]:g} / edge {second[1]:g}", floor=seed_change.max())
            print(f"gap of the seed means (best - second): {means.iloc[0] - means.iloc[1]:.3f} points; "
                  f"largest seed-to-seed range of one pair: {seed_change.max():.3f} points")
            print(f"verdict: {verdict.text}")

    weights = {"semseg": 1.0, "depth": 1.0, "normals": float(chosen[0]), "edge": float(chosen[1])}
    print(f"\nchosen loss weights: {json.dumps(weights)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    out.with_suffix(".json").write_text(json.dumps(weights) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')} ({time.perf_counter() - start:.0f} s wall)")


if __name__ == "__main__":
    main()
