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

The file describes itself in ONNX ``metadata_props``, so it can be used without ensemblenet's
model files: ``ensemblenet.classes`` (JSON list, the output's column order),
``ensemblenet.input`` (JSON: input name, layout, size, dtype, value range, the interpolation to
resize with, and that normalization happens inside), ``ensemblenet.members`` and
``ensemblenet.strategy``. :class:`OnnxPredictor` (and ``ensemblenet predict -m file.onnx``) reads
them to run the file on image files directly.

Needs the optional ``onnx`` and ``onnxruntime`` packages: ``pip install 'ensemblenet[onnx]'``.
The exported graph matches the same computation in PyTorch to about 1e-5 in probability on CPU
(tests check 1e-4); when no resizing is needed that computation is exactly
:meth:`Ensemble.predict_proba <ensemblenet.Ensemble.predict_proba>`'s.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..data import UnreadableImageError, View, load_image
from ..errors import ConfigError, MissingDependencyError
from ..strategies import strategy_name
from ._members import EnsembleParts
from ._tta import TTA, member_probs

__all__ = ["EnsembleGraph", "OnnxPredictor", "export_onnx", "onnx_metadata", "run_onnx"]


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
    _describe(onnx, target, ensemble, (h, w), input_dtype)
    if check:
        onnx.checker.check_model(str(target))
    return target


def _describe(onnx: Any, target: Path, ensemble: EnsembleParts, size: tuple[int, int], dtype: str) -> None:
    """Write the classes and the input spec into the file's ``metadata_props``."""
    first = ensemble.members[0]
    metadata = {
        "ensemblenet.classes": json.dumps(list(first.classes)),
        "ensemblenet.input": json.dumps(
            {
                "name": "images",
                "layout": "NCHW",
                "size": list(size),
                "dtype": dtype,
                "range": [0, 255] if dtype == "uint8" else [0.0, 1.0],
                "channels": "RGB",
                "interpolation": first.spec.interpolation,
                "normalized_inside": True,
            }
        ),
        "ensemblenet.members": json.dumps([m.config.backbone for m in ensemble.members]),
        "ensemblenet.strategy": strategy_name(ensemble.strategy),
        "ensemblenet.version": __version__,
    }
    model = onnx.load(str(target))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(target))


def onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (read with onnxruntime, without loading the weights twice)."""
    ort = _require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


class OnnxPredictor:
    """Run an exported ensemble file on image files, PIL images or tensors, with onnxruntime.

    The classes and the input (size, dtype, interpolation) come from the file's metadata (see the
    module docstring), so nothing else is needed to use it.

    Raises:
        ConfigError: a file without ensemblenet's metadata (exported by something else).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        ort = _require("onnxruntime")
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own error classes: one line naming the file instead
            raise ConfigError(
                f"{self.path} cannot be opened as an ONNX model ({str(exc).strip().splitlines()[0]}); "
                "pass a file written by `ensemblenet export` or Ensemble.export_onnx"
            ) from exc
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        if "ensemblenet.classes" not in meta or "ensemblenet.input" not in meta:
            raise ConfigError(
                f"{self.path} is an ONNX model (an export from another tool) without ensemblenet's metadata "
                "(classes, input spec), so its classes are unknown: export it with `ensemblenet export` or "
                "Ensemble.export_onnx, or run it with onnxruntime yourself"
            )
        self.classes: tuple[str, ...] = tuple(json.loads(meta["ensemblenet.classes"]))
        spec = json.loads(meta["ensemblenet.input"])
        self.input_dtype: str = spec["dtype"]
        self.view = View(
            size=(int(spec["size"][0]), int(spec["size"][1])), interpolation=spec["interpolation"]
        )
        self.metadata = meta

    def predict_proba(self, images: Sequence[Any] | torch.Tensor) -> torch.Tensor:
        """``(N, C)`` probabilities of image files / PIL images (NaN rows for unreadable files), or of
        an image tensor already at the file's input size and dtype."""
        if isinstance(images, torch.Tensor):
            return torch.from_numpy(run_onnx(self.path, images, session=self.session)).double()
        out = torch.full((len(images), len(self.classes)), math.nan, dtype=torch.float64)
        pixels, rows = [], []
        for i, item in enumerate(images):
            try:
                picture = load_image(item) if isinstance(item, (str, os.PathLike)) else item.convert("RGB")
            except UnreadableImageError:
                continue
            pixels.append(self.view.apply(picture))
            rows.append(i)
        if pixels:
            batch = torch.stack(pixels)
            batch = batch if self.input_dtype == "uint8" else batch.float() / 255.0
            out[rows] = torch.from_numpy(run_onnx(self.path, batch, session=self.session)).double()
        return out


def run_onnx(
    path: str | os.PathLike[str], images: torch.Tensor | np.ndarray, *, session: Any = None
) -> np.ndarray:
    """Run an exported ensemble with onnxruntime (CPU); returns the ``(N, C)`` probabilities."""
    if session is None:
        ort = _require("onnxruntime")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    (probs,) = session.run(["probs"], {"images": array})
    return np.asarray(probs)
