"""Export a whole ensemble as one ONNX graph: every member plus the combination.

Design (chosen and fixed): the graph has **one input**, ``images``, a batch ``(N, 3, H, W)`` at
one size ``input_size`` (default: the first member's), either float32 in ``[0, 1]``
(``input_dtype="float32"``, the default) or uint8 0..255 (``input_dtype="uint8"``). Inside the
graph each member's branch resizes the batch to that member's size when it differs (bilinear or
bicubic as the member's spec says, with the resize table of :class:`~ensemblenet.data.View` — **without**
antialiasing: PyTorch's antialiased resize cannot be exported, so when sizes differ the graph's
probabilities differ slightly from :meth:`Ensemble.predict_proba
<ensemblenet.Ensemble.predict_proba>`, which antialiases; feed images at the members'
size, or give members one size, for an exact match), normalizes with its own mean/std, runs,
and applies softmax (and the ensemble's test-time augmentation, if any). The member
probabilities ``(M, N, C)`` go through the strategy's ``combine``; the single output, ``probs``,
is ``(N, C)`` float32. The batch dimension is dynamic.

The strategy is traced with its fitted state baked in as constants: ``mean``, ``geometric``,
``weighted``, ``greedy``, ``stacking`` and ``calibrated`` export; the vote's float64 tie-break
does not need to (use ``mean`` for deployment, or check the result with :func:`run_onnx`).

Needs the optional ``onnx`` and ``onnxruntime`` packages: ``pip install 'ensemblenet[onnx]'``.
The exported graph matches the same computation in PyTorch to about 1e-5 in probability on CPU
(tests check 1e-4); when no resizing is needed that computation is exactly
:meth:`Ensemble.predict_proba <ensemblenet.Ensemble.predict_proba>`'s.
"""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import View
from ..errors import ConfigError, MissingDependencyError
from ._members import EnsembleParts
from ._tta import TTA, member_probs

__all__ = ["EnsembleGraph", "export_onnx", "run_onnx"]


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"ONNX export needs the optional package {module!r}: pip install 'ensemblenet[onnx]' "
            "(or pip install onnx onnxruntime)"
        ) from None


class EnsembleGraph(nn.Module):
    """The exported computation as a torch module: ``images (N, 3, H, W) -> probs (N, C)``."""

    def __init__(self, ensemble: EnsembleParts, input_dtype: str = "float32") -> None:
        super().__init__()
        if input_dtype not in ("float32", "uint8"):
            raise ConfigError(f"input_dtype must be 'float32' or 'uint8', got {input_dtype!r}")
        self.members = nn.ModuleList(ensemble.members)
        self.views = [View.of(m.spec) for m in ensemble.members]
        self.strategy = ensemble.strategy
        self.tta: TTA | None = getattr(ensemble, "tta", None)
        self.uint8 = input_dtype == "uint8"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if self.uint8 else images
        probs = []
        for member, view in zip(self.members, self.views, strict=True):
            xm = view.resize_batch(x, exportable=True)
            probs.append(member_probs(member, xm, self.tta))
        return self.strategy.combine(torch.stack(probs, dim=0)).float()


def export_onnx(
    ensemble: EnsembleParts,
    path: str | os.PathLike[str],
    *,
    input_size: tuple[int, int] | int | None = None,
    input_dtype: str = "float32",
    opset: int = 17,
    check: bool = True,
) -> Path:
    """Write ``ensemble`` as one ONNX graph to ``path`` (see the module docstring for its input).

    Args:
        input_size: ``(H, W)`` of the graph's input (default: the first member's size).
        input_dtype: ``"float32"`` (0..1) or ``"uint8"`` (0..255).
        opset: ONNX opset version.
        check: run ``onnx.checker`` on the result.

    Raises:
        MissingDependencyError: ``onnx`` is not installed.
        ConfigError: the strategy still needs fitting, or cannot be exported.
    """
    onnx = _require("onnx")
    if getattr(ensemble.strategy, "needs_fit", False):
        raise ConfigError("fit the ensemble's strategy (Ensemble.fit_weights(val)) before exporting it")
    size = input_size if input_size is not None else ensemble.members[0].spec.size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    graph = EnsembleGraph(ensemble, input_dtype).eval()
    if input_dtype == "uint8":
        example = torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8)
    else:
        example = torch.rand(2, 3, h, w)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    homes = [next(m.parameters(), torch.empty(0)).device for m in ensemble.members]
    modes = [m.training for m in ensemble.members]
    try:
        for m in ensemble.members:
            m.cpu().eval()
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter warns about its own deprecation and about traced Python
            # conditions on shapes; neither concerns the fixed-shape graph written here.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph,
                (example,),
                str(target),
                input_names=["images"],
                output_names=["probs"],
                dynamic_axes={"images": {0: "batch"}, "probs": {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
    except Exception as exc:  # the exporter raises many types; say which strategy failed
        raise ConfigError(
            f"cannot export this ensemble (strategy {ensemble.strategy!r}, tta {graph.tta!r}) to ONNX: {exc}"
        ) from exc
    finally:
        for m, home, mode in zip(ensemble.members, homes, modes, strict=True):
            m.to(home).train(mode)
    if check:
        onnx.checker.check_model(str(target))
    return target


def run_onnx(path: str | os.PathLike[str], images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Run an exported ensemble with onnxruntime (CPU); returns the ``(N, C)`` probabilities."""
    ort = _require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    (probs,) = session.run(["probs"], {"images": array})
    return np.asarray(probs)
