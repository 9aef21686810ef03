"""Datasets, augmentation and batching. Every dataset yields the batch-dict convention of DESIGN.md."""

from .synthetic import SyntheticScenes

__all__ = ["SyntheticScenes"]
