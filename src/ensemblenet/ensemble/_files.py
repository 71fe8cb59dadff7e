"""Save and load a whole :class:`~ensemblenet.ensemble.Ensemble` as one self-describing file.

An ensemble file is the same container as a model file (:func:`~ensemblenet.save_model`): a
safetensors file whose settings are canonical JSON, one sha256 over settings and every tensor,
written atomically, read without running any code, and checked field by field on load with the
same validator (:class:`~ensemblenet.models.Fields`): each member's config as in a model file,
the strategy name known to the strategy registry, the TTA settings, and the strategy's fitted
state tried on the members before the ensemble is handed out.

Settings (``format_version`` 2)::

    {"format": "ensemblenet.ensemble", "format_version": 2, "ensemblenet_version": "...",
     "torch_version": "...", "created": "ISO-8601 UTC", "classes": [...],
     "members": [{"config": {...ModelConfig...}, "state_dict": {...tensors...}}, ...],
     "strategy": {"name": "stacking", "state": {...fitted state...}},
     "tta": {"flip": true, "crops": 0, "crop_scale": 0.875} | null}

A strategy is saved as its registered name plus ``state_dict()`` (plain data) when it has one,
and rebuilt as ``STRATEGIES.get(name)()`` followed by ``load_state_dict(state)``. The built-in
strategies (including fitted weights, greedy counts, stacking coefficients and temperatures) all
round-trip; a custom strategy must be registered, and needs ``state_dict``/``load_state_dict`` if
it carries settings. ``format_version`` 1 files (0.1, ``torch.save`` archives) are still read.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..errors import CheckpointError, EnsembleNetError
from ..models import (
    Fields,
    TransferModel,
    check_header,
    config_from_file,
    file_header,
    model_from_state,
    read_document,
    tensors_sha256,
    write_document,
)
from ..strategies import STRATEGIES, Strategy, strategy_from_state, strategy_state
from ._members import EnsembleParts, combine_probas
from ._tta import TTA

__all__ = ["ENSEMBLE_FORMAT", "ENSEMBLE_FORMAT_VERSION", "SavedEnsemble", "read_ensemble", "save_ensemble"]

ENSEMBLE_FORMAT = "ensemblenet.ensemble"
ENSEMBLE_FORMAT_VERSION = 2
_FIELDS = ("format", "format_version", "ensemblenet_version", "torch_version", "created", "classes")
_MAX_MEMBERS = 1000


class SavedEnsemble(NamedTuple):
    """What an ensemble file holds, rebuilt: ``Ensemble(*saved)`` is the saved ensemble."""

    members: list[TransferModel]
    strategy: Strategy
    tta: TTA | None


def save_ensemble(ensemble: EnsembleParts, path: str | os.PathLike[str]) -> Path:
    """Write ``ensemble`` (members, strategy with its fitted state, TTA setting) to ``path`` atomically."""
    tta = getattr(ensemble, "tta", None)
    document: dict[str, Any] = {
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
    return write_document(document, path)


def read_ensemble(
    path: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    trust_code: bool = False,
    expected_sha256: str | None = None,
) -> SavedEnsemble:
    """Rebuild the members, strategy and TTA saved by :func:`save_ensemble`, offline; members in
    eval mode (:func:`~ensemblenet.load_ensemble` makes them an Ensemble).

    ``trust_code`` and ``expected_sha256`` work as in :func:`~ensemblenet.load_model`.

    Raises:
        CheckpointError: one line naming the problem: not a regular file, unreadable, not an
            ensemble file (it says what it is), another sha256, newer format, modified, an invalid
            field, or a member backbone that would run code without ``trust_code``.
    """
    contents = read_document(
        path, what="ensemble file", expected_sha256=expected_sha256, map_location=map_location
    )
    f = Fields(contents.document, f"ensemble file {os.fspath(path)!r}")
    check_header(f, ENSEMBLE_FORMAT, legacy=contents.legacy, what="ensemble file")
    f.only((*_FIELDS, "members", "strategy", "tta", *(("sha256",) if contents.legacy else ())))
    classes = f.names("classes", low=2)
    members = f.get("members")
    if not isinstance(members, list) or not 1 <= len(members) <= _MAX_MEMBERS:
        raise f.error("members", f"must be a list of 1 to {_MAX_MEMBERS} members, got {str(members)[:60]}")
    saved = []
    for i, raw in enumerate(members):
        member = Fields(raw, f.where, f"members.{i}")
        member.only(("config", "state_dict"))
        state = member.tensors("state_dict")
        config = config_from_file(member.get("config"), f.where, f"members.{i}.config")
        if list(config.classes) != classes:
            raise member.error(
                "config.classes", f"are {list(config.classes)}, not the file's classes {classes}"
            )
        saved.append((config, state))
    if contents.legacy and f.data.get("sha256") != _legacy_digest(contents.document):
        raise CheckpointError(
            f"{f.where} is corrupted or was modified: its sha256 does not match the one it records. "
            "Re-create it or restore a good copy"
        )
    strategy_fields = f.mapping("strategy")
    assert strategy_fields is not None  # not optional
    strategy_fields.only(("name", "state"))
    strategy_fields.registered("name", STRATEGIES, "@register_strategy('name')")
    strategy_fields.mapping("state", optional=True)
    tta = _tta_from_file(f)
    models = [
        model_from_state(config, state, where=f.where, trust_code=trust_code, prefix=f"members.{i}.config")
        for i, (config, state) in enumerate(saved)
    ]
    strategy = _strategy_from_file(dict(strategy_fields.data), len(models), len(classes), f)
    return SavedEnsemble(models, strategy, tta)


def _tta_from_file(f: Fields) -> TTA | None:
    tta = f.mapping("tta", optional=True)
    if tta is None:
        return None
    tta.only(("flip", "crops", "crop_scale"))
    crops = tta.int_("crops", low=0, high=5)
    if crops not in (0, 5):
        raise tta.error("crops", f"must be 0 or 5, got {crops}")
    return TTA(flip=tta.bool_("flip"), crops=crops, crop_scale=tta.number("crop_scale", above=0.0, below=1.0))


def _strategy_from_file(saved: dict[str, Any], members: int, classes: int, f: Fields) -> Strategy:
    """Rebuild the strategy and try it once on uniform probabilities, so a state that does not fit
    the members (three weights for two members...) is refused here, not at the first prediction."""
    try:
        strategy = strategy_from_state(saved)
        if not getattr(strategy, "needs_fit", False):
            combine_probas(strategy, torch.full((members, 2, classes), 1.0 / classes))
    except (EnsembleNetError, TypeError, ValueError, KeyError, IndexError, RuntimeError) as exc:
        raise f.error(
            "strategy", f"cannot be restored for {members} member(s) ({type(exc).__name__}: {exc})"
        ) from None
    return strategy


def _legacy_digest(payload: dict[str, Any]) -> str:
    """The sha256 0.1 ensemble files record (tensors, classes, configs, strategy, TTA)."""
    tensors = {
        f"members.{i}.{k}": v
        for i, member in enumerate(payload["members"])
        for k, v in member["state_dict"].items()
    }
    meta = {
        "classes": payload["classes"],
        "configs": [m["config"] for m in payload["members"]],
        "strategy": payload.get("strategy"),
        "tta": payload.get("tta"),
    }
    text = json.dumps(meta, sort_keys=True, default=repr)
    return hashlib.sha256((tensors_sha256(tensors) + "|" + text).encode()).hexdigest()
