"""Bilinear resizing: mtl_core.resize.resize_bilinear (two matrix products) against F.interpolate, per
call at the shapes training meets, and in whole training steps of the study models. Prints figures;
asserts nothing.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/resize.py [--rounds 10] [--threads 1]
        [--models mtinet mtl_baseline] [--bf16] [--official-shape]

Per call: forward + backward of one resize, the input channels_last (as the models' activations) and
the incoming gradient channels_last (a convolution downstream) or NCHW (a loss downstream), fp32.
Shapes: the 16-channel 1/2-resolution features that MTI-Net's aggregation upsamples, the deep-supervision
predictions the losses bring to 64x64 (13 semseg classes, 1 depth channel), and NYUD's 40 classes from
24x32 to 96x128 (the official setting).

Training steps: train.train_step of each model at the studies' settings (benchmarks/speed.py's
configs), once as the project runs it and once with the models' and losses' resizing replaced by
F.interpolate; `--official-shape` adds MTI-Net in the official NYUD setting. Candidates run in
alternating rounds in one process and the best round is reported, so that other load on the machine
inflates none of them more than the others.
"""

from __future__ import annotations

import argparse
import contextlib

import torch
import torch.nn.functional as F
from augmentation import best_of_rounds  # benchmarks/augmentation.py, next to this file

import mtl_core.models.heads
import mtl_core.tasks
from mtl_core.resize import resize_bilinear

CALLS = {  # name: (input shape, output size, gradient layout)
    "MTI-Net aggregation, 16 ch 16x16 -> 32x32, grad channels_last": ((16, 16, 16, 16), (32, 32), "cl"),
    "MTI-Net aggregation, 16 ch 16x16 -> 32x32, grad NCHW": ((16, 16, 16, 16), (32, 32), "nchw"),
    "semseg loss, 13 cl. 16x16 -> 64x64, grad NCHW": ((16, 13, 16, 16), (64, 64), "nchw"),
    "depth loss, 1 ch 32x32 -> 64x64, grad NCHW": ((16, 1, 32, 32), (64, 64), "nchw"),
    "NYUD semseg, 40 cl. 24x32 -> 96x128, grad NCHW": ((8, 40, 24, 32), (96, 128), "nchw"),
}


def interpolate(x, size):
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


@contextlib.contextmanager
def resizing_by_interpolate():
    """The models' and losses' resizing done by F.interpolate, as before mtl_core.resize."""
    saved = mtl_core.models.heads.resize_bilinear, mtl_core.tasks.resize_bilinear
    mtl_core.models.heads.resize_bilinear = mtl_core.tasks.resize_bilinear = interpolate
    try:
        yield
    finally:
        mtl_core.models.heads.resize_bilinear, mtl_core.tasks.resize_bilinear = saved


def per_call(rounds: int) -> None:
    g = torch.Generator().manual_seed(0)
    candidates = {}
    for name, (shape, size, grad_layout) in CALLS.items():
        x = torch.randn(*shape, generator=g).contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        grad = torch.randn(*shape[:2], *size, generator=g)
        if grad_layout == "cl":
            grad = grad.contiguous(memory_format=torch.channels_last)
        for impl, fn in (("F.interpolate", interpolate), ("resize_bilinear", resize_bilinear)):
            def call(fn=fn, x=x, size=size, grad=grad):
                fn(x, size).backward(grad)
                x.grad = None

            candidates[name, impl] = call
    best_of_rounds(candidates, 2)
    best = best_of_rounds(candidates, rounds)
    print("per call, forward + backward (ms):")
    for name in CALLS:
        old, new = best[name, "F.interpolate"], best[name, "resize_bilinear"]
        print(f"  {name:62s} F.interpolate {1e3 * old:7.2f}   resize_bilinear {1e3 * new:7.2f}   "
              f"{old / new:4.2f}x")


def training_steps(models: list[str], bf16: bool, official: bool, rounds: int) -> None:
    import speed  # benchmarks/speed.py, next to this file: the studies' configs and training step

    steps = {}
    for name in models:
        config = speed.study_configs()[name]
        batch = next(speed.training_batches(config))
        precisions = {"fp32": None, **({"bf16": torch.bfloat16} if bf16 else {})}
        for precision, dtype in precisions.items():
            steps[name, precision] = (speed.training_step(config, batch, dtype)[0], config.batch_size)
    if official:
        config = speed.official_shape_config()
        tasks = speed.make_tasks(config.tasks, dataset=speed.DATASETS[config.dataset])
        batch = speed.random_nyud_batch(config, tasks["semseg"].channels)
        steps["mtinet (official shape)", "fp32"] = (speed.training_step(config, batch, None)[0],
                                                    config.batch_size)
    candidates = {}
    for key, (step, _) in steps.items():
        candidates[(*key, "resize_bilinear")] = step

        def old_step(step=step):
            with resizing_by_interpolate():
                step()

        candidates[(*key, "F.interpolate")] = old_step
    best_of_rounds(candidates, 3)  # warm-up: oneDNN's kernel choice, the allocator
    best = best_of_rounds(candidates, rounds)
    print("\ntraining step (train.train_step), images/s:")
    for (name, precision), (_, batch_size) in steps.items():
        old, new = best[name, precision, "F.interpolate"], best[name, precision, "resize_bilinear"]
        print(f"  {name:24s} {precision}  F.interpolate {batch_size / old:7.1f}   resize_bilinear "
              f"{batch_size / new:7.1f}   {old / new:4.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="*", default=["mtinet", "mtl_baseline"])
    parser.add_argument("--bf16", action="store_true", help="also time the steps in bf16 autocast")
    parser.add_argument("--official-shape", action="store_true", help="also MTI-Net in the official setting")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), best of {args.rounds} "
          "alternating rounds")
    per_call(args.rounds)
    if args.models or args.official_shape:
        training_steps(args.models, args.bf16, args.official_shape, args.rounds)


if __name__ == "__main__":
    main()
