"""The engine that runs the frozen parts: eager PyTorch or ONNX Runtime (float32 or int8).

With a frozen-feature cache, training costs almost nothing and the frozen backbone's forward pass
is the whole bill; at prediction time a whole model is frozen. This layer runs either through the
engine chosen with one setting, everywhere it applies (:func:`~ensemblenet.fit_with_feature_cache`,
:func:`~ensemblenet.training.compute_features`, :class:`~ensemblenet.Ensemble` prediction,
evaluation and TTA)::

    engine="auto"              # ONNX Runtime when installed and the device is a CPU (the default)
    engine="torch"             # eager PyTorch
    engine="onnxruntime"       # ONNX Runtime, float32
    engine="onnxruntime-int8"  # ONNX Runtime, static int8 (opt-in; refused where it loses accuracy)
    engine=OnnxRuntimeEngine(threads=1)   # or an object with settings

ONNX Runtime runs the module exported once to ONNX; the graph is cached on disk under a digest
of the module's weights and structure, the input shape, the export recipe and the library
versions (a hit rebuilds nothing; changed weights never reuse a stale graph), in
``$ENSEMBLENET_CACHE/engines``, ``$XDG_CACHE_HOME/ensemblenet/engines`` or
``~/.cache/ensemblenet/engines``. It agrees with PyTorch to float rounding (the tests check
features and probabilities of every offline backbone to 1e-4). Its intra-op threads default to
the physical cores; decoding runs on a second thread meanwhile (:func:`ensemblenet.data.prefetch`).
The performance page has the measurements behind each default.

int8 (``"onnxruntime-int8"``) is ONNX Runtime's static quantization (QDQ, per-channel weights)
calibrated on a few hundred labelled training images, then checked on held-out ones: it is refused
with :class:`~ensemblenet.QuantizationError` where it loses more accuracy than ``int8_tolerance``.
"""

from ._cache import ENGINE_RECIPE_VERSION, engine_cache_dir, module_digest
from ._engines import (
    ENGINES,
    Engine,
    EngineLike,
    OnnxRuntimeEngine,
    TorchEngine,
    onnxruntime_available,
    resolve_engine,
)
from ._frozen import FrozenPrefix, model_runner, prefix_runner
from ._hardware import cpu_has_vnni, cpu_name, physical_cores
from ._int8 import Int8Images, split_calibration
from ._runtime import OnnxRunner, Runner, TorchRunner, clear_sessions

__all__ = [
    "ENGINES",
    "ENGINE_RECIPE_VERSION",
    "Engine",
    "EngineLike",
    "FrozenPrefix",
    "Int8Images",
    "OnnxRunner",
    "OnnxRuntimeEngine",
    "Runner",
    "TorchEngine",
    "TorchRunner",
    "clear_sessions",
    "cpu_has_vnni",
    "cpu_name",
    "engine_cache_dir",
    "model_runner",
    "module_digest",
    "onnxruntime_available",
    "physical_cores",
    "prefix_runner",
    "resolve_engine",
    "split_calibration",
]
