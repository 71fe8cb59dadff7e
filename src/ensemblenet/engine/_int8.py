"""Static int8 quantization of an exported graph, and the held-out check that may refuse it.

Recipe (ONNX Runtime's own tools): ``quant_pre_process`` (shape inference, graph optimization),
then ``quantize_static`` in the QDQ format with per-channel int8 weights, uint8 activations and
MinMax calibration over the calibration images. Matrix products after the pooling (``Gemm`` /
``MatMul``: a classifier head) stay float32: they cost nothing next to the convolutions, and
quantized logits would coarsen the probabilities that ensembles combine.

On CPUs without VNNI, ONNX Runtime computes u8s8 products with VPMADDUBSW, whose 16-bit sums can
saturate; ``reduce_range=True`` (7-bit weights) avoids it and is the default there. Whether it is
enough is measured, every time, by the **held-out check**: the int8 and the float32 graph both run
on ``check_images`` labelled images that calibration never saw, and

* for a whole model (logits), each graph's top-1 accuracy is the score;
* for a frozen backbone prefix (features, no head yet), a nearest-class-mean probe is the score:
  class centroids of the L2-normalized (spatially pooled) features of the calibration images,
  computed separately from each graph's own features, classify the held-out images.

int8 is refused (:class:`~ensemblenet.QuantizationError`) when its score is lower than float32's
by more than ``int8_tolerance``. The measured numbers are stored beside the graph (a JSON file),
so a later run decides at once without recalibrating.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import Samples, View, file_stamp, make_loader
from ..errors import ClassMismatchError, ConfigError, MissingDependencyError, QuantizationError
from ._hardware import cpu_name

__all__ = ["Int8Images", "check_int8", "quantize_int8", "refuse_if_worse", "split_calibration"]

log = logging.getLogger("ensemblenet.engine")


@dataclass(frozen=True)
class Int8Images:
    """Calibration and held-out images for int8, decoded lazily (a cache hit needs no decoding).

    ``classes``: the class order of the labels the check uses (a model's own classes for logits).
    """

    calibration: Samples
    check: Samples
    classes: tuple[str, ...]

    def fingerprint(self) -> str:
        """Paths, labels, modification times and sizes of every image, in order."""
        rows = [
            f"{part}\0{path}\0{label}\0{file_stamp(path)}"
            for part, samples in (("cal", self.calibration), ("check", self.check))
            for path, label in zip(samples.paths, samples.labels, strict=True)
        ]
        return "\n".join([*rows, "classes\0" + "\0".join(self.classes)])

    def batches(self, part: str, view: View, batch_size: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(float32 images in [0, 1], labels in self.classes' order)`` batches of one part."""
        samples = self.calibration if part == "calibration" else self.check
        mapping = _label_map(samples.classes, self.classes)
        for batch in make_loader(samples, view, batch_size=batch_size):
            if len(batch):
                images = batch.images[0].float().div_(255.0).numpy()
                yield images, mapping[batch.labels].numpy()


def _label_map(have: tuple[str, ...], want: tuple[str, ...]) -> torch.Tensor:
    unknown = [c for c in have if c not in want]
    if unknown:
        raise ClassMismatchError(
            f"the int8 calibration images have classes {unknown} that the model does not predict (its "
            f"classes: {list(want)}); calibrate on the model's own training images"
        )
    return torch.tensor([want.index(c) for c in have], dtype=torch.int64)


def split_calibration(samples: Samples, calibration: int, check: int, classes: tuple[str, ...]) -> Int8Images:
    """A seeded draw of ``calibration`` images and ``check`` *other* images from ``samples``.

    With fewer than ``calibration + check`` images the two parts share them in proportion.

    Raises:
        ConfigError: fewer than 2 images, so no held-out check is possible.
    """
    n = len(samples)
    if n < 2:
        raise ConfigError(
            f"int8 needs labelled calibration images (some to calibrate, others for the held-out check); "
            f"got {n}. Pass more training images as calibration=, or use engine='onnxruntime' (float32)"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    if calibration + check > n:
        calibration = max(1, min(n - 1, round(n * calibration / (calibration + check))))
        check = n - calibration
    return Int8Images(
        samples.subset(order[:calibration]), samples.subset(order[calibration : calibration + check]), classes
    )


def _require_quantization() -> tuple[Any, Any]:
    try:  # optional dependency (ensemblenet[onnx]), imported only when an int8 graph is built
        from onnxruntime import quantization
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise MissingDependencyError(
            "engine='onnxruntime-int8' needs onnxruntime's quantization tools: "
            "pip install 'ensemblenet[onnx]'"
        ) from None
    return quantization, quant_pre_process


def quantize_int8(fp32_path: Path, out: Path, images: Int8Images, view: View, *, reduce_range: bool) -> None:
    """Write the int8 (QDQ, per-channel) version of the graph at ``fp32_path`` to ``out``."""
    q, pre_process = _require_quantization()
    import onnx  # optional dependency (ensemblenet[onnx]), only needed to build an engine

    class Reader(q.CalibrationDataReader):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            # Small batches: the calibration session's memory grows with the batch it runs (every
            # activation is kept for its min/max), and ONNX Runtime's arena keeps the peak;
            # measured on EfficientNet-Lite2 (260 px), 256 images: 2.0 GB peak at 4 per batch,
            # 2.9 GB at 8, over 16 GB (killed) at 32.
            self.batches = (x for x, _ in images.batches("calibration", view, batch_size=4))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.batches, None)
            return None if x is None else {"images": x}

    with tempfile.TemporaryDirectory(prefix="ensemblenet-int8-") as tmp:
        source = Path(tmp) / "preprocessed.onnx"
        try:
            pre_process(str(fp32_path), str(source))
        except Exception as exc:  # an optimization it cannot do is no reason to give up int8
            log.warning(
                "int8: ONNX Runtime's pre-processing failed (%s); quantizing the graph as exported", exc
            )
            source = fp32_path
        graph = onnx.load(str(source))
        head = [node.name for node in graph.graph.node if node.op_type in ("Gemm", "MatMul")]
        with _quiet_root_logger():
            q.quantize_static(
                str(source),
                str(out),
                Reader(),
                quant_format=q.QuantFormat.QDQ,
                per_channel=True,
                reduce_range=reduce_range,
                activation_type=q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8,
                calibrate_method=q.CalibrationMethod.MinMax,
                nodes_to_exclude=head,
            )


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    # ONNX Runtime's quantization tools log advice at INFO/WARNING on the root logger.
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _outputs(session: Any, images: Int8Images, part: str, view: View) -> tuple[np.ndarray, np.ndarray]:
    out, labels = [], []
    for x, y in images.batches(part, view):
        (result,) = session.run(None, {"images": x})
        out.append(np.asarray(result, dtype=np.float64))
        labels.append(y)
    return np.concatenate(out), np.concatenate(labels)


def _pooled(features: np.ndarray) -> np.ndarray:
    flat = features.mean(axis=(2, 3)) if features.ndim == 4 else features.reshape(len(features), -1)
    norms: np.ndarray = np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    return np.asarray(flat / norms)


def _probe_accuracy(cal: np.ndarray, cal_y: np.ndarray, check: np.ndarray, check_y: np.ndarray) -> float:
    """Nearest-class-mean accuracy: centroids of the calibration features, cosine similarity."""
    classes = np.unique(cal_y)
    cal_p, check_p = _pooled(cal), _pooled(check)
    centroids = np.stack([cal_p[cal_y == c].mean(axis=0) for c in classes])
    predicted = classes[(check_p @ centroids.T).argmax(axis=1)]
    return float((predicted == check_y).mean())


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))


def check_int8(fp32: Any, int8: Any, images: Int8Images, view: View, task: str) -> dict[str, Any]:
    """Score both sessions on the held-out images (see the module docstring); a JSON-able dict."""
    check_fp, y = _outputs(fp32, images, "check", view)
    check_q, _ = _outputs(int8, images, "check", view)
    extra: dict[str, float] = {}
    if task == "logits":
        score_fp = float((check_fp.argmax(axis=1) == y).mean())
        score_q = float((check_q.argmax(axis=1) == y).mean())
        agreement = float((check_fp.argmax(axis=1) == check_q.argmax(axis=1)).mean())
        probe = "top-1 accuracy of the model"
        # Not part of the decision, but worth knowing before combining or calibrating: int8
        # keeps the argmax far better than the probabilities.
        moved = np.abs(_softmax(check_q) - _softmax(check_fp))
        extra = {"mean_abs_prob_change": float(moved.mean()), "max_abs_prob_change": float(moved.max())}
    else:
        cal_fp, cal_y = _outputs(fp32, images, "calibration", view)
        cal_q, _ = _outputs(int8, images, "calibration", view)
        score_fp = _probe_accuracy(cal_fp, cal_y, check_fp, y)
        score_q = _probe_accuracy(cal_q, cal_y, check_q, y)
        agreement = float(np.mean(np.sum(_pooled(check_fp) * _pooled(check_q), axis=1)))
        probe = "nearest-class-mean probe on the features (agreement: mean cosine similarity)"
    rel = np.linalg.norm((check_q - check_fp).reshape(len(y), -1), axis=1) / np.maximum(
        np.linalg.norm(check_fp.reshape(len(y), -1), axis=1), 1e-12
    )
    return {
        "task": task,
        "probe": probe,
        "float32_accuracy": score_fp,
        "int8_accuracy": score_q,
        "agreement": agreement,
        "mean_relative_error": float(rel.mean()),
        **extra,
        "check_images": len(y),
        "calibration_images": len(images.calibration),
        "cpu": cpu_name(),
    }


def refuse_if_worse(result: dict[str, Any], tolerance: float, what: str) -> None:
    """Raise :class:`~ensemblenet.QuantizationError` when int8 loses more than ``tolerance``."""
    loss = result["float32_accuracy"] - result["int8_accuracy"]
    if not math.isfinite(loss) or loss > tolerance + 1e-12:
        raise QuantizationError(
            f"int8 refused for {what}: on {result['check_images']} held-out images its "
            f"{result['probe'].split(' (')[0]} is {result['int8_accuracy']:.1%} against "
            f"{result['float32_accuracy']:.1%} in float32, a loss of {loss:.1%} > int8_tolerance "
            f"{tolerance:.1%}, on this CPU ({result['cpu']}). Use engine='onnxruntime' (float32), or "
            "OnnxRuntimeEngine(int8=True, int8_tolerance=...) if that loss is acceptable"
        )
