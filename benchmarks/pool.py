"""How to split the cores among the suite's training processes: two short runs at study settings (the
MTL baseline on the four dense tasks, seeds 0 and 1), trained through suite.train_planned

    A: 2 processes x 1 thread (both runs at once)        B: 1 process x 2 threads (one after the other)

Prints the wall-clock seconds of each round and their medians; asserts nothing.

    .venv/bin/python benchmarks/pool.py [--images 256] [--epochs 1] [--rounds 2]

Each round trains into a fresh temporary run store (nothing is reused), on data generated before the
first round (in the data cache, $MTL_CORE_DATA if set); the rounds alternate A, B, A, B, ... so that load
from other processes affects both alike. The times include what the suite pays per run too: starting a
spawned process and importing torch.

Measured on the 2-core CPU this suite is tuned on, niced, while another training job kept both cores
busy (so the figures are noisy and exaggerate the gap: a 2-thread process waits whenever one of its
threads loses its core; rerun the command above on an idle machine for clean ones):
    --images 256 --epochs 1 --rounds 2:  A 2x1 median 36.4 s (32.5-40.3), B 1x2 median 83.1 s (63.9-102.3)
suite.default_jobs() therefore starts one process per core, one thread each.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from mtl_core import experiments
from mtl_core.runs import run_directory
from mtl_core.suite import PlannedRun, train_planned
from mtl_core.train import make_datasets


def short_runs(images: int, epochs: int) -> list[PlannedRun]:
    # study settings (backbone, widths, batch, lr) with fewer images; one validation pass at the end
    study = {"model": "mtl_baseline", "tasks": experiments.DENSE_TASKS}
    configs = [experiments.base_config("quick", seed=seed, num_train=images, num_val=32, epochs=epochs,
                                       eval_every=epochs, **study) for seed in (0, 1)]
    # each round trains into its own store: the directory here only names the run
    return [PlannedRun(c, run_directory(c, "."), [("benchmark", f"seed {c.seed}")]) for c in configs]


def timed_round(runs: list[PlannedRun], processes: int, threads: int) -> float:
    with tempfile.TemporaryDirectory(prefix="pool-bench-") as store:
        start = time.perf_counter()
        outcomes = train_planned(runs, processes, threads, root=store, log=lambda _: None)
        seconds = time.perf_counter() - start
    failed = [o.error for o in outcomes if o.status != "trained"]
    if failed:
        raise RuntimeError(f"a benchmark run failed: {failed}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="training images per run (default 256)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per run (default 1)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each layout (default 2)")
    args = parser.parse_args()

    runs = short_runs(args.images, args.epochs)
    make_datasets(runs[0].config)  # generated once, before anything is timed
    layouts = {"A: 2 processes x 1 thread": (2, 1), "B: 1 process x 2 threads": (1, 2)}
    times: dict[str, list[float]] = {name: [] for name in layouts}
    for round_ in range(args.rounds):
        for name, (processes, threads) in layouts.items():
            times[name].append(timed_round(runs, processes, threads))
            print(f"round {round_ + 1}: {name}: {times[name][-1]:.1f} s", flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        print(f"{name}: median {median:.1f} s (best {min(times[name]):.1f}, worst {max(times[name]):.1f})")
    (a, ta), (b, tb) = medians.items()
    print(f"{a if ta < tb else b} is faster, by {max(ta, tb) / min(ta, tb):.2f}x")


if __name__ == "__main__":
    main()
