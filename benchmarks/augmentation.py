"""Training augmentation: the per-sample chain (train_transforms, run in Dataset.__getitem__) against
BatchAugment on the collated batch, and their share of a training step of the MTL baseline.
Prints figures; asserts nothing.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/augmentation.py [--size 64 64] [--batch 16] [--rounds 9]

Both augment the same synthetic scenes (all dense maps, boxes, intrinsics) with flip, scale-crop
(1 to 1.5) and colour jitter. Candidates run in alternating rounds inside one process, one call each
per round, and the best (minimum) round is reported, so that load from other processes on the machine
inflates none of them more than the others. The training step is train.train_step (forward, losses,
backward, Adam step) of the MTL baseline on the same batch, fp32 and channels-last as `fit`, with the
default cnn backbone and with the studies' smaller one (experiments.STUDY cnn_widths). Scenes are
generated into a temporary folder unless MTL_CORE_DATA is set.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from mtl_core.data import SyntheticScenes, collate_batch
from mtl_core.data.transforms import BatchAugment, train_transforms
from mtl_core.experiments import STUDY
from mtl_core.models import build_model
from mtl_core.tasks import make_tasks
from mtl_core.train import TrainConfig, make_optimizer, to_device, train_step
from mtl_core.weighting import build_weighting

TASKS = ("semseg", "depth", "normals", "edge")


def best_of_rounds(candidates: dict, rounds: int) -> dict[str, float]:
    """Seconds per call of every candidate: the minimum over `rounds` alternating rounds."""
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def step_of(tasks, batch, backbone_options: dict):
    """A closure running one training step of the MTL baseline on `batch`."""
    torch.manual_seed(0)
    model = build_model("mtl_baseline", tasks, backbone_options=backbone_options)
    model = model.to(memory_format=torch.channels_last).train()
    weighting = build_weighting("fixed", list(tasks))
    optimizer = make_optimizer(TrainConfig(), model.parameters(), weighting.parameters())
    return lambda: train_step(model, batch, tasks, weighting, optimizer, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(64, 64))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size, n = tuple(args.size), args.batch

    with tempfile.TemporaryDirectory() as tmp:
        root = None if os.environ.get("MTL_CORE_DATA") else tmp
        data = SyntheticScenes("train", num_samples=n, size=size, root=root, workers=1, progress=False)
        samples = [data[i] for i in range(n)]
    batch = collate_batch(samples)

    per_sample = train_transforms(generator=torch.Generator().manual_seed(0))
    augment, generator = BatchAugment(), torch.Generator().manual_seed(0)

    tasks = make_tasks(TASKS, dataset=data)
    step_batch = to_device(augment(batch, generator), torch.device("cpu"))
    study_widths = list(STUDY["full"]["cnn_widths"])
    steps = {"cnn (default widths)": step_of(tasks, step_batch, {}),
             f"cnn {study_widths} (studies)": step_of(tasks, step_batch, {"widths": study_widths})}

    candidates = {
        "per-sample": lambda: [per_sample(s) for s in samples],
        "batch": lambda: augment(batch, generator),
        **steps,
    }
    best_of_rounds(candidates, 2)  # warm-up: allocator, oneDNN kernel choice
    seconds = best_of_rounds(candidates, args.rounds)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {size[0]}x{size[1]}, batch {n}, "
          f"best of {args.rounds} alternating rounds")
    for name in ("per-sample", "batch"):
        t = seconds[name]
        print(f"{name:10s} augmentation: {1e3 * t / n:6.3f} ms per image ({1e3 * t:6.2f} ms per batch)")
    print(f"batch / per-sample speed-up: {seconds['per-sample'] / seconds['batch']:.1f}x")
    print(f"share of a training step of the MTL baseline ({'+'.join(TASKS)}, fp32) taken by augmentation:")
    for name in steps:
        step = seconds[name]
        shares = "   ".join(f"{aug} {100 * seconds[aug] / (seconds[aug] + step):4.1f}%"
                           for aug in ("per-sample", "batch"))
        print(f"  {name:28s} step {1e3 * step:6.1f} ms:   {shares}")


if __name__ == "__main__":
    main()
