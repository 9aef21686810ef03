"""The dense studies' backbone: the in-house `hrnet` against timm's HighResolutionNet with the same layers,
and where its pyramid starts. Prints images/s of full training steps (fp32); asserts nothing.

    .venv/bin/python benchmarks/backbones.py [--threads 2] [--rounds 9] [--steps 4] [--batch 16]

Candidates run in alternating rounds inside one process (A, B, C, A, B, C, ...) and the medians are
reported (with the best and worst round), so that load from other processes on the machine affects
all of them alike.

1. Implementation: the MTL baseline (4 dense tasks) on each backbone, and the backbone alone (its maps'
   mean square as the loss). timm's net is built from a custom config of the study widths; its stem is
   patched to the same widths and stride (timm fixes the second stem conv at 64 channels, stride 2).
   Both get their input in channels-last layout, as `hrnet` does by default.
2. Pyramid: the study needs maps of at least 16x16 (finest) and 4x4 (coarsest). At 64x64 that means a
   stem of stride 2 (maps 32 ... 4); the alternative is stride 4 on 128x128 images (the same maps).
3. Memory layout: `hrnet` with and without its channels-last input.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from mtl_core.experiments import STUDY
from mtl_core.models import build_backbone
from mtl_core.models.baselines import SharedEncoderMTL
from mtl_core.models.heads import Backbone
from mtl_core.tasks import make_tasks
from mtl_core.train import train_step
from mtl_core.weighting import build_weighting

TASKS = make_tasks(("semseg", "depth", "normals", "edge"))


class TimmHRNetFromConfig(Backbone):
    """timm's HighResolutionNetFeatures from hrnet_w18_small_v2's config with other widths and depths."""

    def __init__(self, widths, stem_width: int, stem_stride: int, stem_blocks: int = 1,
                 num_modules=(1, 1, 1), blocks: int = 1):
        super().__init__()
        from timm.models.hrnet import BasicBlock, HighResolutionNetFeatures, cfg_cls

        cfg = copy.deepcopy(cfg_cls["hrnet_w18_small_v2"])
        cfg["stem_width"] = stem_width
        cfg["stage1"].update(block_type="BASIC", num_channels=(stem_width,), num_blocks=(stem_blocks,))
        for stage, n, modules in zip((2, 3, 4), (2, 3, 4), num_modules, strict=True):
            cfg[f"stage{stage}"].update(num_modules=modules, num_channels=tuple(widths[:n]),
                                        num_blocks=(blocks,) * n)
        net = HighResolutionNetFeatures(cfg, feature_location="", out_indices=(1, 2, 3, 4))
        net.conv2 = nn.Conv2d(stem_width, stem_width, 3, stem_stride // 2, 1, bias=False)
        net.bn2 = nn.BatchNorm2d(stem_width)
        net.layer1 = net._make_layer(BasicBlock, stem_width, stem_width, stem_blocks)
        self.body = net
        self.channels = list(widths)
        self.strides = [stem_stride * 2**s for s in range(4)]

    def forward(self, images):
        return list(self.body(images.contiguous(memory_format=torch.channels_last)))


def random_batch(batch: int, size: int) -> dict:
    g = torch.Generator().manual_seed(0)
    shape = (batch, 1, size, size)
    return {"image": torch.rand(batch, 3, size, size, generator=g),
            "semseg": torch.randint(0, TASKS["semseg"].channels, (batch, size, size), generator=g),
            "depth": torch.rand(shape, generator=g) * 5 + 0.5,
            "normals": F.normalize(torch.randn(batch, 3, size, size, generator=g), dim=1),
            "edge": (torch.rand(shape, generator=g) > 0.9).float()}


def model_step(backbone: nn.Module, size: int, batch: int):
    """A full training step of the MTL baseline on `backbone` (forward, losses, backward, Adam)."""
    model = SharedEncoderMTL(TASKS, backbone).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    weighting, data = build_weighting("fixed", list(TASKS)), random_batch(batch, size)
    return lambda: train_step(model, data, TASKS, weighting, optimizer, None)


def backbone_step(backbone: nn.Module, size: int, batch: int):
    optimizer = torch.optim.Adam(backbone.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, size, size)

    def step():
        optimizer.zero_grad(set_to_none=True)
        sum(m.square().mean() for m in backbone(images)).backward()
        optimizer.step()
    return step


def alternate(candidates: dict, batch: int, rounds: int, steps: int) -> None:
    """Time every candidate in alternating rounds; print the median images/s (and the range)."""
    for step in candidates.values():
        for _ in range(3):  # warm-up: oneDNN picks its kernels
            step()
    speeds = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, step in candidates.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            speeds[name].append(batch * steps / (time.perf_counter() - start))
    for name, values in speeds.items():
        print(f"  {name:52s} median {statistics.median(values):6.1f} img/s   best {max(values):6.1f}   "
              f"worst {min(values):6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    widths, cnn_widths = STUDY["quick"]["widths"], STUDY["quick"]["cnn_widths"]
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731

    torch.manual_seed(0)
    ours = build_backbone("hrnet", widths=widths)
    stem_width, stem_stride = ours.stem[0].out_channels, ours.strides[0]
    timm = TimmHRNetFromConfig(widths, stem_width, stem_stride)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, batch {args.batch}, "
          f"{args.rounds} alternating rounds of {args.steps} steps")
    print(f"\n1. hrnet widths {tuple(widths)}, stem {stem_width} stride {stem_stride}, at 64x64: "
          f"ours {count(ours) / 1e6:.3f} M params, timm {count(timm) / 1e6:.3f} M")
    print(" MTL baseline (4 dense tasks), full training step:")
    alternate({"in-house hrnet": model_step(ours, 64, args.batch),
               "timm HighResolutionNet": model_step(timm, 64, args.batch)}, args.batch, args.rounds,
              args.steps)
    print(" backbone alone, training step:")
    alternate({"in-house hrnet": backbone_step(ours, 64, args.batch),
               "timm HighResolutionNet": backbone_step(timm, 64, args.batch)}, args.batch, args.rounds,
              args.steps)

    print("\n2. Where the pyramid starts (MTL baseline, full training step):")
    alternate({"hrnet stride 2 at 64x64 (maps 32 ... 4)": model_step(ours, 64, args.batch),
               "hrnet stride 4 at 128x128 (maps 32 ... 4)": model_step(
                   build_backbone("hrnet", widths=widths, stem_stride=4), 128, args.batch),
               "hrnet stride 4 at 64x64 (maps 16 ... 2: too coarse)": model_step(
                   build_backbone("hrnet", widths=widths, stem_stride=4), 64, args.batch),
               f"cnn {tuple(cnn_widths)} at 64x64 (maps 16 ... 2)": model_step(
                   build_backbone("cnn", widths=cnn_widths), 64, args.batch)},
              args.batch, args.rounds, args.steps)

    print("\n3. Memory layout of hrnet (MTL baseline, full training step; backbone alone):")
    alternate({"channels-last input (default)": model_step(ours, 64, args.batch),
               "input layout kept (NCHW)": model_step(
                   build_backbone("hrnet", widths=widths, channels_last=False), 64, args.batch),
               "channels-last, backbone alone": backbone_step(ours, 64, args.batch),
               "NCHW, backbone alone": backbone_step(
                   build_backbone("hrnet", widths=widths, channels_last=False), 64, args.batch)},
              args.batch, args.rounds, args.steps)


if __name__ == "__main__":
    main()
