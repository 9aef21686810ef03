"""Parameters and FLOPs per component (top-level child module) of a model, as a DataFrame.

FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` on one forward pass (eval mode, no grad):
convolutions and matrix products, 2 FLOPs per multiply-add, so GMACs = FLOPs / 2 / 1e9 (the unit of
MTI-Net's tables). Element-wise ops (BN, ReLU, interpolation, softmax) count 0. FLOPs spent outside
every top-level child (functional ops in the model's own forward) go to the row "(other)".
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def model_summary(model: nn.Module, input_size: tuple[int, int] = (480, 640),
                  batch_size: int = 1) -> pd.DataFrame:
    """One row per top-level child, then "(other)" and "total"; columns `params`, `flops`, `gmacs`."""
    if len(input_size) != 2 or any(int(v) != v or v <= 0 or v % 32 for v in input_size):
        raise ValueError(f"input_size={tuple(input_size)}: expected (H, W), both positive multiples of 32 "
                         f"(the models use 1/4 ... 1/32 scales)")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be at least 1")
    components = [name for name, _ in model.named_children()]

    params = dict.fromkeys(components + ["(other)"], 0)
    for name, p in model.named_parameters():  # deduplicated: a shared parameter is counted once
        top = name.split(".", 1)[0]
        params[top if top in params else "(other)"] += p.numel()

    reference = next(model.parameters(), torch.empty(0))
    images = torch.randn(batch_size, 3, *map(int, input_size), device=reference.device, dtype=reference.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(images)
    finally:
        model.train(was_training)
    counts = {key: sum(ops.values()) for key, ops in counter.get_flop_counts().items()}
    root = type(model).__name__  # the tracker names modules "<RootClass>.<child>...", by call
    flops = {name: _called_flops(counts, f"{root}.{name}") for name in components}
    flops["(other)"] = counter.get_total_flops() - sum(flops.values())

    table = pd.DataFrame({"params": pd.Series(params), "flops": pd.Series(flops)})
    table.loc["total"] = table.sum()
    table["gmacs"] = table["flops"] / 2e9
    table.index.name = "component"
    return table


def _called_flops(counts: dict[str, int], prefix: str) -> int:
    """FLOPs of the module `prefix` and everything under it. A container (ModuleList, ModuleDict) is never
    called itself, so sum the outermost called modules under it (a module's count includes its callees)."""
    inside = [key for key in counts if key == prefix or key.startswith(prefix + ".")]
    outermost = [key for key in inside
                 if not any(key.startswith(other + ".") for other in inside if other != key)]
    return sum(counts[key] for key in outermost)
