"""Runners: a frozen module behind an engine, called like the module (``images -> tensor``).

:class:`TorchRunner` calls the module. :class:`OnnxRunner` exports it to ONNX once per input
size (found again on disk by its digest, see ``_cache.py``), optionally quantizes it to int8, and
runs it with an ONNX Runtime session; sessions are kept per process (a few, least recently used
dropped), so calling a runner for every chunk of a long job costs one digest, not a new session.

Both take ``uint8`` (0..255) or float (0..1) images ``(N, 3, H, W)`` on the CPU and return
float32 on the CPU (ONNX Runtime) or wherever the module lives (PyTorch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ..data import View
from ..errors import ConfigError
from ._cache import cached_file, engine_cache_dir, module_digest, versions, write_json
from ._engines import OnnxRuntimeEngine
from ._hardware import cpu_has_vnni
from ._int8 import Int8Images, check_int8, quantize_int8, refuse_if_worse

__all__ = ["OnnxRunner", "Runner", "TorchRunner", "clear_sessions"]

log = logging.getLogger("ensemblenet.engine")


class Runner(Protocol):
    """What a frozen module becomes: called like the module, images to its output."""

    engine: str
    built: list[str]

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...

    def prepare(self) -> Runner:
        """Build (or find) what the first call would, now (outside ``torch.inference_mode``)."""
        ...


_SESSIONS: OrderedDict[tuple[str, int, bool], Any] = OrderedDict()
_SESSIONS_LOCK = threading.Lock()
_MAX_SESSIONS = 8


def clear_sessions() -> None:
    """Forget the ONNX Runtime sessions kept in this process (the files on disk stay)."""
    with _SESSIONS_LOCK:
        _SESSIONS.clear()


def _session(path: Path, engine: OnnxRuntimeEngine) -> Any:
    import onnxruntime as ort  # optional dependency (ensemblenet[onnx]); resolve_engine checked it

    key = (str(path), engine.intra_op_threads, engine.spinning)
    with _SESSIONS_LOCK:
        if key in _SESSIONS:
            _SESSIONS.move_to_end(key)
            return _SESSIONS[key]
    options = ort.SessionOptions()
    options.intra_op_num_threads = engine.intra_op_threads
    options.inter_op_num_threads = 1  # one graph at a time; its convolutions use the intra-op pool
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if engine.spinning else "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    with _SESSIONS_LOCK:
        _SESSIONS[key] = session
        while len(_SESSIONS) > _MAX_SESSIONS:
            _SESSIONS.popitem(last=False)
    return session


def _as_float_array(images: torch.Tensor) -> np.ndarray:
    """float32 NCHW in 0..1, converted by numpy: torch's element-wise ops on a batch go through its
    intra-op thread pool, which competes with ONNX Runtime's threads for the same cores."""
    array = images.detach().to("cpu").numpy()
    if array.dtype == np.uint8:
        scaled: np.ndarray = np.divide(np.ascontiguousarray(array), np.float32(255.0), dtype=np.float32)
        return scaled
    return np.ascontiguousarray(array, dtype=np.float32)


class TorchRunner:
    """The module itself (eager PyTorch); the caller chooses device, eval mode and inference mode."""

    engine = "torch"

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.built: list[str] = []  # nothing is ever built

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images)  # type: ignore[no-any-return]

    def prepare(self) -> TorchRunner:
        return self


class OnnxRunner:
    """``module`` exported to ONNX and run by ONNX Runtime (see the module docstring).

    Args:
        module: a module in eval mode on the CPU taking ``(N, 3, H, W)`` images (float in 0..1).
        engine: the settings.
        what: a description for logs and errors (``"mobilenet_v2 backbone prefix"``).
        task: ``"logits"`` (a whole model) or ``"features"`` (a backbone prefix); decides the
            int8 held-out check.
        view: how to decode the int8 calibration images (the module's input size and resize).
        int8_images: calibration and held-out images (int8 only).

    Attributes:
        built: what this runner had to build (``"export"``, ``"int8"``): empty on a cache hit.
        files: the graph files it runs, per input size.
        int8_check: the held-out check's numbers (int8 only).
    """

    def __init__(
        self,
        module: nn.Module,
        engine: OnnxRuntimeEngine,
        *,
        what: str,
        task: str,
        view: View,
        int8_images: Int8Images | None = None,
    ) -> None:
        if any(t.device.type != "cpu" for t in module.state_dict().values()):
            raise ConfigError(f"the ONNX Runtime engine runs on the CPU; move {what} to the CPU first")
        if engine.int8 and int8_images is None:
            raise ConfigError(
                f"engine={engine.name!r} needs labelled calibration images for {what}: pass "
                "OnnxRuntimeEngine(int8=True, calibration=train_samples) (a few hundred training images)"
            )
        self.module, self.settings, self.what, self.task, self.view = module, engine, what, task, view
        self.int8_images = int8_images
        self.engine = engine.name
        self.built: list[str] = []
        self.files: dict[tuple[int, int], Path] = {}
        self.int8_check: dict[str, Any] | None = None
        self._sessions: dict[tuple[int, int], Any] = {}
        self._folder = engine_cache_dir(engine.cache_dir)
        self._digests: dict[tuple[int, int], str] = {}

    def prepare(self) -> OnnxRunner:
        """Build (or find) the graph and session for the view's input size now."""
        self._session_for(self.view.size)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = _as_float_array(images)  # ONNX Runtime reads contiguous NCHW memory
        session = self._session_for((int(x.shape[-2]), int(x.shape[-1])))
        (out,) = session.run(None, {"images": x})
        return torch.from_numpy(np.asarray(out))

    def _session_for(self, size: tuple[int, int]) -> Any:
        if size not in self._sessions:
            path = self._graph(size)
            self.files[size] = path
            self._sessions[size] = _session(path, self.settings)
        return self._sessions[size]

    def _graph(self, size: tuple[int, int]) -> Path:
        settings = {"input": [3, *size], "dtype": "float32", "opset": self.settings.opset, "task": self.task}
        digest = module_digest(self.module, settings)
        fp32 = self._folder / f"{digest}.onnx"
        started = time.perf_counter()
        if cached_file(fp32, lambda tmp: self._export(tmp, size)):
            self.built.append("export")
            write_json(fp32.with_suffix(".json"), {"what": self.what, **settings, "versions": versions()})
            log.info("engine: exported %s to %s (%.1f s)", self.what, fp32, time.perf_counter() - started)
        if not self.settings.int8:
            return fp32
        return self._int8_graph(fp32, digest, size)

    def _export(self, target: Path, size: tuple[int, int]) -> None:
        was_training = self.module.training
        self.module.eval()
        example = torch.rand(2, 3, *size)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                # The TorchScript exporter warns about its own deprecation and about traced Python
                # conditions on shapes; neither concerns a graph whose only dynamic axis is the batch.
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    self.module,
                    (example,),
                    str(target),
                    input_names=["images"],
                    output_names=["output"],
                    dynamic_axes={"images": {0: "batch"}, "output": {0: "batch"}},
                    opset_version=self.settings.opset,
                    dynamo=False,
                )
        except Exception as exc:  # the exporter raises many types; say what failed and the way out
            raise ConfigError(
                f"cannot export {self.what} to ONNX ({exc}); use engine='torch' for this model"
            ) from exc
        finally:
            self.module.train(was_training)

    def _int8_graph(self, fp32: Path, digest: str, size: tuple[int, int]) -> Path:
        engine, images = self.settings, self.int8_images
        assert images is not None  # checked in __init__
        if size != tuple(self.view.size):
            raise ConfigError(
                f"int8 is calibrated at {self.what}'s input size {self.view.size}, not {size}; resize the "
                "images to the model's size or use engine='onnxruntime'"
            )
        reduce_range = engine.reduce_range if engine.reduce_range is not None else not cpu_has_vnni()
        recipe = {"fp32": digest, "reduce_range": reduce_range, "calibration": images.fingerprint()}
        key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
        int8, report = self._folder / f"{key}.int8.onnx", self._folder / f"{key}.int8.json"
        started = time.perf_counter()
        if cached_file(
            int8, lambda tmp: quantize_int8(fp32, tmp, images, self.view, reduce_range=reduce_range)
        ):
            self.built.append("int8")
            log.info(
                "engine: quantized %s to int8 on %d images (reduce_range=%s, %.0f s)",
                self.what,
                len(images.calibration),
                reduce_range,
                time.perf_counter() - started,
            )
        if report.is_file():
            result = json.loads(report.read_text())
        else:
            result = check_int8(_session(fp32, engine), _session(int8, engine), images, self.view, self.task)
            result["reduce_range"] = reduce_range
            write_json(report, result)
        self.int8_check = result
        log.info(
            "engine: int8 %s on %d held-out images: %.1f%% (float32 %.1f%%), agreement %.3f",
            self.what,
            result["check_images"],
            100 * result["int8_accuracy"],
            100 * result["float32_accuracy"],
            result["agreement"],
        )
        refuse_if_worse(result, engine.int8_tolerance, self.what)
        return int8
