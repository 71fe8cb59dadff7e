"""What a resumed run must share with the run that wrote its state: the run's fingerprint.

:meth:`Trainer.save_state <ensemblenet.Trainer.save_state>` records, next to the weights and the
optimizer, everything that decides what the next epochs compute: the model (backbone, starting
weights, head, classes, input spec), the freeze policy, the optimizer settings (optimizer, learning
rate, weight decay, schedule, warm-up, batch size, label smoothing, gradient clipping, augmentation),
the seed, and a digest of the training and validation file lists (names relative to their common
folder, with labels, so moving the data folder is fine but adding, removing or relabelling an
image is not). ``fit(resume=...)`` compares it with the run it is asked to continue and refuses a
mismatch with one line naming every differing field and both values.

``epochs`` may change on resume with the constant schedule (train longer, or stop earlier); with a
decaying schedule (``cosine``, ``linear``) it is part of the fingerprint, since the schedule spans
all epochs. What does not change the arithmetic may differ: device, precision, workers, progress
bars, the decoded-image cache, the evaluation batch size.

>>> policy = {"name": "bn_only"}
>>> a = fingerprint({"backbone": "torchvision:resnet18"}, {"lr": 1e-3, "epochs": 2}, policy)
>>> b = fingerprint({"backbone": "torchvision:resnet34"}, {"lr": 1e-2, "epochs": 5}, policy)
>>> for line in differences(a, b):
...     print(line)
backbone: 'torchvision:resnet18' in the state, 'torchvision:resnet34' now
lr: 0.001 in the state, 0.01 now
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

from ..data import Samples

__all__ = ["differences", "files_digest", "fingerprint"]

_MODEL_FIELDS = ("backbone", "weights", "weights_source", "head", "classes", "spec")
_TRAIN_FIELDS = (
    "optimizer",
    "lr",
    "weight_decay",
    "schedule",
    "warmup",
    "batch_size",
    "label_smoothing",
    "grad_clip",
    "augment",
    "seed",
)


def files_digest(data: Any) -> dict[str, Any] | None:
    """``{"files": n, "sha256": ...}`` of a :class:`~ensemblenet.Samples`' files and labels, by their
    paths relative to the folder they share; None for data it cannot see into (a DataLoader)."""
    if not isinstance(data, Samples):
        return None
    paths = [os.fspath(p) for p in data.paths]
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0]) if paths else ""
    digest = hashlib.sha256()
    for path, label in zip(paths, data.labels, strict=True):
        digest.update(f"{os.path.relpath(path, root) if root else path}\t{data.classes[label]}\n".encode())
    return {"files": len(paths), "sha256": digest.hexdigest()}


def fingerprint(
    model_config: Mapping[str, Any],
    train_config: Mapping[str, Any],
    policy: Mapping[str, Any],
    train_files: Mapping[str, Any] | None = None,
    val_files: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What must match between a state and the run resuming it (see the module docs)."""
    out: dict[str, Any] = {
        ("input_spec" if k == "spec" else k): model_config.get(k) for k in _MODEL_FIELDS if k in model_config
    }
    out.update({k: train_config.get(k) for k in _TRAIN_FIELDS if k in train_config})
    if train_config.get("schedule", "constant") != "constant":
        out["epochs"] = train_config.get("epochs")
    out["freeze"] = dict(policy)
    if train_files is not None:
        out["train_files"] = dict(train_files)
    if val_files is not None:
        out["val_files"] = dict(val_files)
    return out


def _shown(value: Any) -> str:
    if isinstance(value, Mapping) and set(value) == {"files", "sha256"}:
        return f"{value['files']} files (sha256 {str(value['sha256'])[:12]})"
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """One ``"field: A in the state, B now"`` per field both know and that differs.

    A field only one side records (a state written before a field was added, or data given as a
    DataLoader) is not compared.
    """
    found = []
    for key in [k for k in now if k in saved]:
        a, b = saved[key], now[key]
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            a, b = list(a), list(b)
        if a != b:
            found.append(f"{key}: {_shown(a)} in the state, {_shown(b)} now")
    return found
