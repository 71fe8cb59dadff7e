"""The frozen-feature cache's data: a frozen prefix's outputs for a list of images."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["FeatureCache"]


@dataclass
class FeatureCache:
    """Prefix outputs of a set of images.

    Attributes:
        features: ``(F, N, ...)``: index 0 holds the plain images' features; ``F`` = 1, or 2 with the
            mirrored images' at index 1, or ``1 + views`` with augmented views at 1 and up.
        labels: ``int64 (N,)``.
        indices: ``int64 (N,)`` indices into the samples (unreadable files are left out).
        skipped: sample indices that could not be decoded.
    """

    features: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    skipped: list[int]

    def __len__(self) -> int:
        return int(self.labels.shape[0])
