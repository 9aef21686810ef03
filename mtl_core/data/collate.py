"""Batch a list of sample dicts (see transforms.py for the sample convention). transforms.BatchAugment
augments such a batch as a whole, boxes and labels lists included."""

from __future__ import annotations

import torch

# Variable number of objects per image: these cannot be stacked, so they stay per-sample lists.
LIST_KEYS = ("boxes", "labels")


def collate_batch(samples: list[dict]) -> dict:
    """Stack equal-shaped tensors to (B, ...); keep boxes/labels and non-tensor values as lists."""
    if not samples:
        raise ValueError("collate_batch needs at least one sample")
    keys = set(samples[0])
    for i, sample in enumerate(samples):
        if set(sample) != keys:
            diff = sorted(map(str, keys ^ set(sample)))
            raise ValueError(f"sample {i} has different keys than sample 0; differing keys: {diff}")

    batch = {}
    for key in samples[0]:
        values = [sample[key] for sample in samples]
        is_tensor = [isinstance(v, torch.Tensor) for v in values]
        if key in LIST_KEYS or not any(is_tensor):
            batch[key] = values
        elif not all(is_tensor):
            raise ValueError(f"key {key!r} is a tensor in some samples and not in others")
        else:
            shapes = [tuple(v.shape) for v in values]
            if len(set(shapes)) > 1:
                raise ValueError(f"key {key!r} has different shapes across samples: {shapes}")
            batch[key] = torch.stack(values)
    return batch
