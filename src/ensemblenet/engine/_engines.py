"""The engine setting: which runtime runs a frozen module, and how it is resolved.

One option everywhere (the frozen-feature cache, ensemble prediction, evaluation and TTA)::

    engine="auto"              # ONNX Runtime when installed and the device is a CPU, else PyTorch
    engine="torch"             # eager PyTorch (what ensemblenet 0.1 always did)
    engine="onnxruntime"       # ONNX Runtime, float32 (optional extra: ensemblenet[onnx])
    engine="onnxruntime-int8"  # ONNX Runtime, static int8 quantization; needs calibration images
    engine=OnnxRuntimeEngine(threads=1, int8=True, calibration=train)   # or an object

Strings are shorthands for the objects: :class:`TorchEngine` and :class:`OnnxRuntimeEngine`.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import torch

from ..data import Samples
from ..errors import ConfigError, MissingDependencyError, UnknownNameError, unknown_name_message
from ._hardware import physical_cores

__all__ = [
    "ENGINES",
    "Engine",
    "EngineLike",
    "OnnxRuntimeEngine",
    "TorchEngine",
    "onnxruntime_available",
    "resolve_engine",
]

#: The engine names the string form accepts.
ENGINES = ("auto", "torch", "onnxruntime", "onnxruntime-int8")


@dataclass(frozen=True)
class Engine:
    """Base of the engine settings. ``prefetch``: decode the next batch on a second thread while
    this engine runs the current one (see :func:`ensemblenet.data.prefetch`)."""

    prefetch: bool = True

    @property
    def name(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class TorchEngine(Engine):
    """Eager PyTorch on the module itself, on any device: the reference the others are checked against.

    ``prefetch=False`` decodes each batch inline, as ensemblenet 0.2 did (the performance page
    measures both).
    """

    @property
    def name(self) -> str:
        return "torch"


@dataclass(frozen=True)
class OnnxRuntimeEngine(Engine):
    """ONNX Runtime on the CPU: the module exported once to ONNX (cached on disk), run by a session.

    Args:
        threads: intra-op threads; None = the physical cores this process may use
            (:func:`~ensemblenet.engine.physical_cores`).
        spinning: let idle ONNX Runtime threads spin-wait for work. Off by default: spinning
            threads take the core the decode thread (``prefetch``) needs.
        cache_dir: folder of exported graphs (default: see :func:`~ensemblenet.engine.engine_cache_dir`).
        opset: ONNX opset of the export.
        int8: static int8 quantization (QDQ, per-channel weights), calibrated on ``calibration``.
        calibration: labelled training images for int8: ``calibration_images`` of them calibrate
            the activation ranges, ``check_images`` others are the held-out check.
        calibration_images: images used to calibrate.
        check_images: held-out images on which the int8 engine's accuracy is compared with
            float32's; at most ``int8_tolerance`` may be lost (else :class:`~ensemblenet.QuantizationError`).
        int8_tolerance: the accuracy (a fraction: 0.01 = one percentage point) int8 may lose on
            the held-out check.
        reduce_range: quantize weights to 7 bits; None = only on CPUs without VNNI, where the 8-bit
            u8s8 kernels can saturate (see the performance page for what this machine measured).
    """

    threads: int | None = None
    spinning: bool = False
    cache_dir: str | os.PathLike[str] | None = None
    opset: int = 17
    int8: bool = False
    calibration: Samples | None = field(default=None, compare=False, repr=False)
    calibration_images: int = 256
    check_images: int = 256
    int8_tolerance: float = 0.01
    reduce_range: bool | None = None

    def __post_init__(self) -> None:
        threads = self.threads
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(
                f"OnnxRuntimeEngine.threads must be a positive int or None (physical cores), got {threads!r}"
            )
        for name in ("calibration_images", "check_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"OnnxRuntimeEngine.{name} must be a positive int, got {value!r}")
        if not 0.0 <= float(self.int8_tolerance) <= 1.0:
            raise ConfigError(
                f"OnnxRuntimeEngine.int8_tolerance is the accuracy int8 may lose, a fraction in [0, 1] "
                f"(0.01 = one percentage point), got {self.int8_tolerance!r}"
            )
        if self.calibration is not None and not isinstance(self.calibration, Samples):
            raise ConfigError(
                "OnnxRuntimeEngine.calibration must be ensemblenet.Samples (labelled training images), "
                f"got {type(self.calibration).__name__}"
            )

    @property
    def name(self) -> str:
        return "onnxruntime-int8" if self.int8 else "onnxruntime"

    @property
    def intra_op_threads(self) -> int:
        return self.threads if self.threads is not None else physical_cores()


EngineLike: TypeAlias = "Literal['auto', 'torch', 'onnxruntime', 'onnxruntime-int8'] | str | Engine"


def onnxruntime_available() -> bool:
    """Both ``onnx`` (the exporter's output format) and ``onnxruntime`` are importable."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def _missing(name: str) -> MissingDependencyError:
    return MissingDependencyError(
        f"engine={name!r} needs the optional packages onnx and onnxruntime: pip install "
        "'ensemblenet[onnx]' (or use engine='torch'; engine='auto' picks ONNX Runtime only when installed)"
    )


def resolve_engine(engine: Any = "auto", *, device: torch.device | str = "cpu") -> Engine:
    """The engine object for a setting: a name from :data:`ENGINES` or an :class:`Engine`.

    ``"auto"`` is :class:`OnnxRuntimeEngine` when onnx and onnxruntime are installed and
    ``device`` is a CPU, else :class:`TorchEngine`.

    Raises:
        UnknownNameError: an unknown name (with close matches).
        MissingDependencyError: ONNX Runtime asked for by name or object but not installed.
        ConfigError: ONNX Runtime on a non-CPU device, or a value of the wrong type.
    """
    dev = torch.device(device)
    if isinstance(engine, str):
        if engine not in ENGINES:
            raise UnknownNameError(
                unknown_name_message(
                    "engine", engine, ENGINES, "Or pass an engine object: OnnxRuntimeEngine(...)."
                )
            )
        if engine == "auto":
            use_ort = dev.type == "cpu" and onnxruntime_available()
            return OnnxRuntimeEngine() if use_ort else TorchEngine()
        resolved: Engine = (
            TorchEngine() if engine == "torch" else OnnxRuntimeEngine(int8=engine == "onnxruntime-int8")
        )
    elif isinstance(engine, Engine) and type(engine) is not Engine:
        resolved = engine
    else:
        raise ConfigError(
            f"engine must be one of {', '.join(repr(e) for e in ENGINES)} or an engine object "
            f"(TorchEngine(), OnnxRuntimeEngine(...)), got {engine!r}"
        )
    if isinstance(resolved, OnnxRuntimeEngine):
        if not onnxruntime_available():
            raise _missing(resolved.name)
        if dev.type != "cpu":
            raise ConfigError(
                f"engine={resolved.name!r} runs on the CPU, but the device is {str(dev)!r}; use "
                "engine='torch' on a GPU (engine='auto' does this by itself)"
            )
    return resolved
