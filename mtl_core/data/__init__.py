"""Datasets, augmentation and batching. Every dataset yields the batch dict described in data/README.md.

`build_dataset(name, split, data_dir, **options)` builds any of `DATASETS`: the embedded synthetic
benchmark, or a real dataset laid out as data/README.md describes (each class documents its options).
"""

from __future__ import annotations

import inspect

from .collate import collate_batch
from .nyud_mt import NYUDMT
from .nyuv2_mat import NYUv2Mat
from .nyuv2_mtan import NYUv2MTAN
from .pascal_mt import PascalMT
from .synthetic import SyntheticScenes

DATASETS = {
    "synthetic": SyntheticScenes,
    "nyud_mt": NYUDMT,
    "nyuv2_mat": NYUv2Mat,
    "nyuv2_mtan": NYUv2MTAN,
    "pascal_mt": PascalMT,
}


def _dataset_class(name: str):
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r}: unknown dataset; choose from {sorted(DATASETS)}")
    return DATASETS[name]


def dataset_options(name: str) -> tuple[str, ...]:
    """The keyword options a dataset's constructor takes (besides split and root)."""
    params = inspect.signature(_dataset_class(name)).parameters
    return tuple(p for p in params if p not in ("split", "root"))


def build_dataset(name: str, split: str, data_dir=None, **options):
    """A dataset by name; `data_dir` is the dataset's folder (for `synthetic`: its cache folder)."""
    cls = _dataset_class(name)
    unknown = sorted(set(options) - set(dataset_options(name)))
    if unknown:
        raise ValueError(f"dataset={name!r} has no option(s) {unknown}; its options are "
                         f"{list(dataset_options(name))}")
    return cls(split=split, root=data_dir, **options)


def dataset_tasks(name: str, **options) -> tuple[str, ...]:
    """The tasks a dataset provides annotations for (some depend on options, e.g. nyuv2_mat's
    class_mapping, which adds semseg)."""
    cls = _dataset_class(name)
    if hasattr(cls, "provided_tasks"):
        return tuple(cls.provided_tasks(**options))
    return tuple(cls.tasks)


__all__ = ["DATASETS", "NYUDMT", "NYUv2MTAN", "NYUv2Mat", "PascalMT", "SyntheticScenes", "build_dataset",
           "collate_batch", "dataset_options", "dataset_tasks"]
