"""Pretrained feature extractors from torchvision, torch.hub or timm, by a ``"source:name"`` string.

>>> bb = load_backbone("torchvision:resnet18")  # random init; weights="DEFAULT" or a file path for pretrained
>>> bb.num_features, bb.spec.size
(512, (224, 224))

Each source builds the FULL classification model first, so an ImageNet state dict with its
classifier loads strictly, and only then removes the classifier: the module returned maps
normalized images ``(N, 3, H, W)`` to pooled features ``(N, num_features)``.

``weights`` is ``None`` (random init), a path to a local file (see :mod:`ensemblenet.models`)
or a weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``, a timm tag such as ``"in1k"``). A name is
looked up in the offline catalog first, then downloaded; without network the
:class:`~ensemblenet.errors.WeightsUnavailableError` says which file to fetch and how to pass it.

New sources register a loader ``(name, weights) -> Backbone`` with :func:`register_source`; the
loader receives ``weights`` as ``None``, a :class:`~pathlib.Path` (an existing file) or a ``str``
(a weights name). A source that runs code it fetches or finds (``hub:`` runs a repository's
``hubconf.py``) is registered with ``runs_code=True``: a model file naming it is rebuilt only with
the user's consent (``load_model(..., trust_code=True)``, see :func:`code_origin`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import overload

import torchvision.models as tvm

from ..errors import UnknownNameError, unknown_name_message
from ..registry import Registry
from ..spec import InputSpec
from ._source_common import Backbone, WeightsArg, weights_arg
from ._source_hub import hub_origin, load_hub
from ._source_timm import load_timm
from ._source_torchvision import load_torchvision

__all__ = ["SOURCES", "SourceLoader", "code_origin", "load_backbone", "register_source"]

logger = logging.getLogger("ensemblenet.models")

_EXAMPLE = "e.g. 'torchvision:resnet18', 'hub:pytorch/vision:resnet18' or 'timm:tf_efficientnet_lite0'"


#: A source loader: ``(name after the "source:" prefix, weights) -> Backbone``.
SourceLoader = Callable[[str, WeightsArg], Backbone]

SOURCES: Registry[SourceLoader] = Registry("backbone source", fix_hint=f"Write 'source:name', {_EXAMPLE}.")


#: Sources that run code to build a backbone, each with a function naming where that code comes from.
_RUNS_CODE: dict[str, Callable[[str], str]] = {}


#: ``runs_code``: False, True, or a function ``model name -> where its code comes from``.
RunsCode = bool | Callable[[str], str]


@overload
def register_source(name: str, *, runs_code: RunsCode = False) -> Callable[[SourceLoader], SourceLoader]: ...
@overload
def register_source(name: str, loader: SourceLoader, *, runs_code: RunsCode = False) -> SourceLoader: ...


def register_source(
    name: str, loader: SourceLoader | None = None, *, runs_code: RunsCode = False
) -> SourceLoader | Callable[[SourceLoader], SourceLoader]:
    """Make ``load_backbone(f"{name}:...")`` call ``loader``; a decorator when ``loader`` is omitted.

    ``runs_code`` marks a source that executes code it fetches or finds (``hub:`` runs a
    repository's ``hubconf.py``): True, or a function naming where a model's code comes from. A
    file naming such a source is only rebuilt with ``trust_code=True`` (see :func:`code_origin`).
    """

    def add(item: SourceLoader) -> SourceLoader:
        SOURCES.register(name, item)
        if callable(runs_code):
            _RUNS_CODE[name] = runs_code
        elif runs_code:
            _RUNS_CODE[name] = lambda model: f"the {name!r} source (registered with runs_code=True)"
        else:
            _RUNS_CODE.pop(name, None)  # a name registered again after unregister()
        return item

    return add if loader is None else add(loader)


def code_origin(backbone: str) -> str | None:
    """Where the code that building ``backbone`` runs comes from, or None when it runs no foreign
    code (``torchvision:``, ``timm:``). Nothing is imported or run to find out.

    >>> code_origin("torchvision:resnet18") is None
    True
    >>> code_origin("hub:someone/repo:entry")
    "the torch.hub repository 'someone/repo' (its hubconf.py, from GitHub or the hub cache)"
    """
    source, _, model_name = str(backbone).partition(":")
    describe = _RUNS_CODE.get(source) if source in SOURCES else None
    return None if describe is None else describe(model_name)


def load_backbone(
    name: str,
    weights: str | os.PathLike[str] | None = None,
    *,
    input_spec: InputSpec | None = None,
) -> Backbone:
    """Build the feature extractor ``name`` (``"source:model"``) with ``weights``.

    Args:
        name: ``"torchvision:<model>"``, ``"hub:<owner/repo[:ref] or local dir>:<entry>"`` or
            ``"timm:<model>"``, or a source added with :func:`register_source`.
        weights: None for random init; a weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``, timm
            ``"imagenet"`` or a pretrained tag); or a local weights file.
        input_spec: replaces the input size / normalization the weights come with.

    Raises:
        UnknownNameError: unknown source, model, hub entry or weights name (close matches listed).
        WeightsError: a weights file that is missing or does not fit the architecture.
        WeightsUnavailableError: named weights that cannot be downloaded here (no network).
        MissingDependencyError: ``timm:`` without timm installed.
    """
    if not isinstance(name, str) or ":" not in name:
        raise UnknownNameError(_no_source_message(name))
    source, _, model_name = name.partition(":")
    if source not in SOURCES:
        raise UnknownNameError(
            unknown_name_message(
                "backbone source", source, SOURCES.names(), f"Write 'source:name', {_EXAMPLE}."
            )
        )
    if not model_name:
        raise UnknownNameError(f"backbone {name!r} names no model after {source + ':'!r}; {_EXAMPLE}.")
    backbone = SOURCES.get(source)(model_name, weights_arg(weights))
    if input_spec is not None:
        backbone = backbone._replace(spec=input_spec)
    logger.info("backbone %s: %d features, input %s", name, backbone.num_features, backbone.spec)
    return backbone


def _no_source_message(name: object) -> str:
    hint = ""
    if isinstance(name, str) and name in tvm.list_models(module=tvm):
        hint = f" Did you mean 'torchvision:{name}'?"
    return (
        f"backbone {name!r} has no source prefix.{hint} Write 'source:name' with a source among "
        f"{SOURCES.names()}, {_EXAMPLE}."
    )


register_source("torchvision", load_torchvision)
register_source("hub", load_hub, runs_code=hub_origin)
register_source("timm", load_timm)
