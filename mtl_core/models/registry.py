"""One registry and one factory for every model, timm-style: `build_model(name, tasks, backbone=...)`.

A model family registers a builder with `@register_model("name")`; the builder receives the task
specs (`mtl_core.tasks`), a backbone instance and the family's own keyword options.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..tasks import TaskSpec, make_tasks
from .backbones import build_backbone

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def decorator(builder):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = builder
        return builder
    return decorator


def list_models() -> list[str]:
    return sorted(_MODELS)


def build_model(name: str, tasks: Iterable[str] | dict[str, TaskSpec], backbone: str = "cnn",
                backbone_options: dict | None = None, **options) -> nn.Module:
    """Build a registered model for `tasks` (task names, or specs from `mtl_core.tasks.make_tasks`).

    Raises ValueError naming the offending argument for an unknown model, backbone or task.
    """
    if name not in _MODELS:
        raise ValueError(f"model={name!r}: unknown model; choose from {list_models()}")
    specs = tasks if isinstance(tasks, dict) else make_tasks(tasks)
    if not specs:
        raise ValueError("tasks: at least one task is needed")
    model = _MODELS[name](specs, build_backbone(backbone, **(backbone_options or {})), **options)
    model.model_name = name
    return model


def check_input(images: torch.Tensor, min_stride: int = 32) -> None:
    """Images must be (B, 3, H, W) with H and W divisible by 32: the models use 1/4 ... 1/32 scales."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected a (B, 3, H, W) tensor, got shape {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if h % min_stride or w % min_stride:
        raise ValueError(f"input size {h}x{w}: height and width must be multiples of {min_stride} "
                         f"(feature maps at 1/4 ... 1/32 scale must tile the image exactly)")
