"""Training speed on this machine: matmul peak, and train-step throughput of MTI-Net and the MTL
baseline in fp32 vs bf16 autocast + channels_last. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/speed.py [--size 64 64] [--batch 16] [--steps 10] [--widths 16 32 48 64]

Achieved model GFLOP/s = FLOPs of one training step (forward + backward, counted by
torch.utils.flop_counter) x steps per second, compared with the bf16 matmul peak measured here.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from mtl_core.losses import task_losses
from mtl_core.models import build_model
from mtl_core.tasks import make_tasks
from mtl_core.train import train_step
from mtl_core.weighting import build_weighting

TASKS = ("semseg", "depth", "normals", "edge")


def matmul_gflops(dtype: torch.dtype, n: int = 1024, seconds: float = 2.0) -> float:
    """Matmul throughput, repeated for about `seconds` (without bf16 instructions a bf16 matmul is
    emulated and can be 50x slower than fp32: a fixed repeat count would run for minutes)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    start, repeats = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        a @ b
        repeats += 1
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def random_batch(batch: int, size: tuple[int, int]) -> dict:
    h, w = size
    normals = torch.nn.functional.normalize(torch.randn(batch, 3, h, w), dim=1)
    return {"image": torch.rand(batch, 3, h, w).contiguous(memory_format=torch.channels_last),
            "semseg": torch.randint(0, 13, (batch, h, w)), "depth": torch.rand(batch, 1, h, w) * 5 + 0.5,
            "normals": normals, "edge": (torch.rand(batch, 1, h, w) > 0.9).float()}


def step_flops(model, batch, tasks) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        losses = task_losses(model(batch["image"]), batch, tasks)
        sum(losses.values()).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def throughput(name: str, options: dict, size, batch_size: int, steps: int, dtype) -> tuple[float, float]:
    tasks = make_tasks(TASKS)
    torch.manual_seed(0)
    model = build_model(name, tasks, **options).to(memory_format=torch.channels_last).train()
    weighting = build_weighting("fixed", list(tasks))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = random_batch(batch_size, size)
    flops = step_flops(model, batch, tasks)
    for _ in range(3):  # warm-up: oneDNN picks its kernels
        train_step(model, batch, tasks, weighting, optimizer, dtype)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, batch, tasks, weighting, optimizer, dtype)
    seconds = (time.perf_counter() - start) / steps
    return batch_size / seconds, flops / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(64, 64))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--widths", type=int, nargs=4, default=None,
                        help="cnn backbone widths (default: the backbone's own, 32 64 128 256)")
    args = parser.parse_args()
    size = tuple(args.size)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"bf16 CPU support: {torch.cpu._is_avx512_bf16_supported()}")
    peak32, peak16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    print(f"matmul 1024^2: fp32 {peak32:7.1f} GFLOP/s   bf16 {peak16:7.1f} GFLOP/s   "
          f"ratio {peak16 / peak32:.2f}x")
    print(f"\ntrain step, tasks {'+'.join(TASKS)}, {size[0]}x{size[1]}, batch {args.batch}:")
    options = {"backbone_options": {"widths": args.widths}} if args.widths else {}
    print(f"backbone: cnn {options or '(default widths)'}")
    models = {"mtl_baseline": options, "mtinet": options}
    for name, options in models.items():
        fp32_ips, fp32_gf = throughput(name, options, size, args.batch, args.steps, None)
        bf16_ips, bf16_gf = throughput(name, options, size, args.batch, args.steps, torch.bfloat16)
        print(f"  {name:13s} fp32 {fp32_ips:7.1f} img/s ({fp32_gf:6.1f} GFLOP/s)   "
              f"bf16+channels_last {bf16_ips:7.1f} img/s ({bf16_gf:6.1f} GFLOP/s)   "
              f"bf16/fp32 {bf16_ips / fp32_ips:.2f}x   "
              f"fp32 step at {100 * fp32_gf / peak32:4.1f}% of the fp32 matmul peak, "
              f"bf16 step at {100 * bf16_gf / peak16:4.1f}% of the bf16 peak")


if __name__ == "__main__":
    main()
