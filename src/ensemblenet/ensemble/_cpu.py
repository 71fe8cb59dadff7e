"""Opt-in faster CPU inference: members in channels-last memory layout.

oneDNN's CPU convolutions run much faster on channels-last (NHWC) tensors than on the default
NCHW layout: in a quick check on the 2-core benchmark machine, MobileNetV2 alone (batch 32,
224 px) went from 35 to 124 images/s; the measured ensemble numbers are on the performance page.
The arithmetic is the same, so the probabilities agree with the default layout to float rounding
(the tests check 1e-5). Converting the weights is enough:
a convolution whose weight is channels-last produces a channels-last output, so the input batch
(and :class:`~ensemblenet.TransferModel`'s own normalization) needs no change.

>>> ensemble = optimize_for_cpu(Ensemble.from_checkpoints(paths))  # doctest: +SKIP

ONNX Runtime (:func:`~ensemblenet.export_onnx` + :func:`~ensemblenet.ensemble.run_onnx`) is
the other fast path, and in the inference benchmark the faster one by far.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import torch
from torch import nn

from ..errors import ConfigError
from ._ensemble import Ensemble

__all__ = ["optimize_for_cpu"]

T = TypeVar("T", bound="Ensemble | nn.Module | Iterable[nn.Module]")


def optimize_for_cpu(target: T) -> T:
    """Put every member (or the model, or each model of an iterable) in channels-last layout and
    eval mode, in place; returns ``target`` so calls chain.

    Raises:
        ConfigError: ``target`` is none of an Ensemble, an ``nn.Module`` or an iterable of modules.
    """
    models: list[nn.Module]
    if isinstance(target, nn.Module):
        models = [target]
    elif isinstance(target, Ensemble):
        models = list(target.members)
    elif isinstance(target, Iterable):
        models = list(target)
    else:
        models = []
    if not models or not all(isinstance(m, nn.Module) for m in models):
        raise ConfigError(
            "optimize_for_cpu takes an Ensemble, a model or an iterable of models, "
            f"got {type(target).__name__}"
        )
    for model in models:
        # Outside inference_mode on purpose: converting parameters inside it would turn them into
        # inference tensors that can no longer be trained.
        with torch.inference_mode(False):
            model.eval().to(memory_format=torch.channels_last)
    return target
