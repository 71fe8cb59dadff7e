"""Save and load a whole :class:`~ensemblenet.ensemble.Ensemble` as one self-describing file.

Like a model file (:func:`~ensemblenet.save_model`), it holds plain data and tensors only, so it
loads with ``torch.load(weights_only=True)``; it is written atomically and carries a sha256 over
every tensor and every setting, so a modified file is refused.

Layout (``format_version`` 1)::

    {"format": "ensemblenet.ensemble", "format_version": 1, "ensemblenet_version": "...",
     "torch_version": "...", "created": "ISO-8601 UTC", "classes": [...],
     "members": [{"config": {...ModelConfig...}, "state_dict": {...}}, ...],
     "strategy": {"name": "stacking", "state": {...fitted state...}},
     "tta": {...} | None, "sha256": "..."}

A strategy is saved as its registered name plus ``state_dict()`` (plain data) when it has one,
and rebuilt as ``STRATEGIES.get(name)()`` followed by ``load_state_dict(state)``. The built-in
strategies (including fitted weights, greedy counts, stacking coefficients and temperatures) all
round-trip; a custom strategy must be registered, and needs ``state_dict``/``load_state_dict`` if
it carries settings.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..errors import CheckpointError
from ..models import (
    TransferModel,
    atomic_save,
    check_format_version,
    file_header,
    model_from_state,
    read_plain_data,
    tensors_sha256,
)
from ..strategies import Strategy, strategy_from_state, strategy_state
from ._members import EnsembleParts
from ._tta import TTA

__all__ = ["ENSEMBLE_FORMAT", "ENSEMBLE_FORMAT_VERSION", "SavedEnsemble", "read_ensemble", "save_ensemble"]

ENSEMBLE_FORMAT = "ensemblenet.ensemble"
ENSEMBLE_FORMAT_VERSION = 1


def _digest(payload: dict[str, Any]) -> str:
    tensors = {
        f"members.{i}.{k}": v
        for i, member in enumerate(payload["members"])
        for k, v in member["state_dict"].items()
    }
    meta = {
        "classes": payload["classes"],
        "configs": [m["config"] for m in payload["members"]],
        "strategy": payload["strategy"],
        "tta": payload["tta"],
    }
    text = json.dumps(meta, sort_keys=True, default=repr)
    return hashlib.sha256((tensors_sha256(tensors) + "|" + text).encode()).hexdigest()


class SavedEnsemble(NamedTuple):
    """What an ensemble file holds, rebuilt: ``Ensemble(*saved)`` is the saved ensemble."""

    members: list[TransferModel]
    strategy: Strategy
    tta: TTA | None


def save_ensemble(ensemble: EnsembleParts, path: str | os.PathLike[str]) -> Path:
    """Write ``ensemble`` (members, strategy with its fitted state, TTA setting) to ``path`` atomically."""
    tta = getattr(ensemble, "tta", None)
    payload: dict[str, Any] = {
        **file_header(ENSEMBLE_FORMAT, ENSEMBLE_FORMAT_VERSION),
        "classes": list(ensemble.classes),
        "members": [
            {
                "config": m.config.to_dict(),
                "state_dict": {k: v.detach().cpu() for k, v in m.state_dict().items()},
            }
            for m in ensemble.members
        ],
        "strategy": strategy_state(ensemble.strategy),
        "tta": None if tta is None else tta.to_dict(),
    }
    payload["sha256"] = _digest(payload)
    return atomic_save(payload, path)


def read_ensemble(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> SavedEnsemble:
    """Rebuild the members, strategy and TTA saved by :func:`save_ensemble`, offline; members in
    eval mode (:func:`~ensemblenet.load_ensemble` makes them an Ensemble).

    Raises:
        CheckpointError: missing, unreadable, foreign, newer-format or modified file.
    """
    path = Path(path)
    payload = read_plain_data(path, what="ensemble file", map_location=map_location)
    if not isinstance(payload, dict) or payload.get("format") != ENSEMBLE_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        hint = " It is a single model: use load_model()." if found == "ensemblenet.model" else ""
        raise CheckpointError(
            f"{str(path)!r} is not an ensemblenet ensemble file (format {found!r}, expected "
            f"{ENSEMBLE_FORMAT!r}).{hint}"
        )
    check_format_version(payload, path, ENSEMBLE_FORMAT_VERSION)
    actual = _digest(payload)
    if payload.get("sha256") != actual:
        raise CheckpointError(
            f"{str(path)!r} is corrupted or was modified: its sha256 is {actual[:16]}..., the file records "
            f"{str(payload.get('sha256'))[:16]}.... Re-create it or restore a good copy."
        )
    members = []
    for i, saved in enumerate(payload["members"]):
        where = f"member {i} of {str(path)!r}"
        members.append(model_from_state(saved["config"], saved["state_dict"], where=where))
    tta = None if payload.get("tta") is None else TTA(**payload["tta"])
    return SavedEnsemble(members, strategy_from_state(payload["strategy"]), tta)
