"""Bring your own backbone: an ``nn.Module`` object (or a timm model object) used as it is.

:func:`~ensemblenet.create_model` and :func:`~ensemblenet.finetune` accept a module instead of a
``"source:name"`` string. A plain module must map normalized images ``(N, 3, H, W)`` to pooled
features ``(N, num_features)``, and says how wide they are and what input it expects
(``num_features=``, ``input_spec=``). A timm model object states both itself: its classifier is
reset in place and its pretrained config gives the input size, mean and std.

A model file keeps the backbone's *name*, not its code: a timm object is named ``timm:<its
architecture>``, which any ensemblenet with timm rebuilds; a plain module is named
``module:<ClassName>`` (or the ``name=`` you give), and loading its file needs a source of that
name, e.g. ``register_source("module", lambda name, weights: Backbone(MyNet(), 512, spec))``.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from ..errors import ConfigError
from ..spec import InputSpec
from ._source_common import Backbone
from ._source_timm import is_timm_model, timm_backbone
from ._weight_files import load_into, read_state_dict

__all__ = ["MODULE_SOURCE", "backbone_from_module"]

#: The source part of a plain module's default name (``module:<ClassName>``).
MODULE_SOURCE = "module"


def backbone_from_module(
    module: nn.Module,
    *,
    num_features: int | None = None,
    input_spec: InputSpec | None = None,
    weights: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> tuple[Backbone, str]:
    """``(Backbone, name)`` for a module object (see the module docstring).

    ``weights``: None or ``"DEFAULT"`` keep the module's own weights; a file path loads that state
    dict into it (by name, or by position for the same tensors under other names).
    """
    if not isinstance(module, nn.Module):
        raise ConfigError(f"a backbone object must be a torch.nn.Module, got {type(module).__name__}")
    source: str | None = f"the {type(module).__name__} object given"
    if weights is not None and str(weights) != "DEFAULT":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"weights={os.fspath(weights)!r} for a backbone object: only a weights file (or None / "
                "'DEFAULT' to keep the object's own weights) can be given; no file is at that path"
            )
        load_into(module, read_state_dict(path), source=str(path))
        source = f"file {path}"
    if is_timm_model(module):
        module.reset_classifier(0)  # type: ignore[operator]
        backbone = timm_backbone(module, source)
        if input_spec is not None:
            backbone = backbone._replace(spec=input_spec)
        architecture = getattr(module, "pretrained_cfg", {}).get("architecture") or type(module).__name__
        return backbone, name or f"timm:{architecture}"
    if num_features is None:
        raise ConfigError(
            f"a {type(module).__name__} backbone object needs num_features= (the width of the pooled "
            "features it outputs, e.g. 512); pass it, or pass a timm model object, which states its own"
        )
    if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
        raise ConfigError(f"num_features must be a positive int, got {num_features!r}")
    chosen = name or f"{MODULE_SOURCE}:{type(module).__name__}"
    if ":" not in chosen:
        raise ConfigError(f"name={chosen!r} must read 'source:name', e.g. 'mynets:{chosen}'")
    return Backbone(module, num_features, input_spec or InputSpec(), source), chosen
