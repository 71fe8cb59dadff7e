"""The frozen parts of a :class:`~ensemblenet.TransferModel` behind an engine.

Two things are frozen while they run: a **backbone prefix** while the feature cache computes it
(``head_only``: the whole backbone; ``freeze_stages``: its first ``k`` stages), and a **whole
model** while an ensemble predicts, evaluates or runs test-time augmentation. :func:`prefix_runner`
and :func:`model_runner` turn either into a runner for the chosen engine.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data import Samples, View
from ..models import TransferModel, split_backbone
from ._engines import Engine, OnnxRuntimeEngine
from ._int8 import split_calibration
from ._runtime import OnnxRunner, Runner, TorchRunner

__all__ = ["FrozenPrefix", "model_runner", "prefix_runner"]


class FrozenPrefix(nn.Module):
    """Normalization, then the backbone's first ``stages`` stages (None: all of it, pooled).

    Holds the model's own prefix modules (shared weights, nothing copied) and a copy of its
    mean/std, so its parameters and buffers, and so its engine digest, are the prefix's alone:
    training the head or the later stages does not invalidate an exported prefix.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: TransferModel, stages: int | None) -> None:
        super().__init__()
        self.prefix, _ = split_backbone(model.backbone, stages)
        self.stages = stages
        self.register_buffer("mean", model.mean.detach().clone())
        self.register_buffer("std", model.std.detach().clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float().div(255.0)
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        return self.prefix(x)  # type: ignore[no-any-return]

    def extra_repr(self) -> str:
        return f"stages={self.stages}"


def _name(model: TransferModel) -> str:
    return model.config.backbone.split(":")[-1]


def prefix_runner(
    model: TransferModel, stages: int | None, engine: Engine, calibration: Samples | None = None
) -> Runner:
    """A runner for ``model``'s frozen prefix: images ``(N, 3, H, W)`` to the prefix's output.

    ``calibration`` (labelled images; int8 only) is used when the engine object has none.
    """
    module = FrozenPrefix(model, stages).eval()
    if not isinstance(engine, OnnxRuntimeEngine):
        return TorchRunner(module)
    what = f"{_name(model)} backbone" + ("" if stages is None else f" (first {stages} stages)")
    return _onnx(module, model, engine, what, "features", calibration)


def model_runner(model: TransferModel, engine: Engine) -> Runner:
    """A runner for the whole ``model`` (eval mode): images to logits ``(N, C)``."""
    if not isinstance(engine, OnnxRuntimeEngine):
        return TorchRunner(model)
    return _onnx(model, model, engine, f"model {_name(model)}", "logits", None)


def _onnx(
    module: nn.Module,
    model: TransferModel,
    engine: OnnxRuntimeEngine,
    what: str,
    task: str,
    calibration: Samples | None,
) -> OnnxRunner:
    images = None
    samples = engine.calibration if engine.calibration is not None else calibration
    if engine.int8 and samples is not None:
        images = split_calibration(samples, engine.calibration_images, engine.check_images, model.classes)
    return OnnxRunner(module, engine, what=what, task=task, view=View.of(model.spec), int8_images=images)
