"""Per-task losses of a model output, deep supervision included (the weighting is applied elsewhere)."""

from __future__ import annotations

import torch

from .tasks import TaskSpec


def task_losses(outputs: dict, batch: dict, tasks: dict[str, TaskSpec]) -> dict[str, torch.Tensor]:
    """{task: loss}: the task loss on the final prediction plus, with the same loss and weight, on
    every intermediate prediction in outputs["deep"] (MTI-Net's deep supervision; an auxiliary task
    predicted only at intermediate scales has only those terms)."""
    losses = {}
    for name, spec in tasks.items():
        terms = [spec.loss(outputs[name], batch)] if name in outputs else []
        terms += [spec.loss(deep[name], batch) for deep in outputs.get("deep", []) if name in deep]
        if not terms:
            raise KeyError(f"the model output has no prediction for task {name!r}")
        losses[name] = torch.stack(terms).sum()
    return losses
