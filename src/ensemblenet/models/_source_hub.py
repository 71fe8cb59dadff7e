"""The ``hub:`` source: ``torch.hub.load`` from GitHub (or the hub cache, offline) or a local folder."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn

from ..errors import ConfigError, UnknownNameError, WeightsUnavailableError, unknown_name_message
from ..spec import InputSpec
from ._source_common import (
    Backbone,
    WeightsArg,
    classifier_keys,
    is_network_error,
    strip_classifier,
    unavailable,
)
from ._source_torchvision import tv_member, tv_spec
from ._weight_files import load_into, read_state_dict

__all__ = ["hub_origin", "load_hub"]


_GITHUB_REPO = re.compile(r"^[\w.-]+/[\w.-]+(:[\w./-]+)?$")


def hub_origin(spec: str) -> str:
    """Where ``hub:<spec>`` takes the code it runs from (for the consent message); runs nothing."""
    repo = spec.rpartition(":")[0] or spec
    if Path(repo).expanduser().is_dir():
        return f"the local folder {str(Path(repo).expanduser().resolve())!r} (its hubconf.py)"
    return f"the torch.hub repository {repo!r} (its hubconf.py, from GitHub or the hub cache)"


def load_hub(spec: str, weights: WeightsArg) -> Backbone:
    repo, sep, entry = spec.rpartition(":")
    if not sep or not repo or not entry:
        raise ConfigError(
            f"hub backbone 'hub:{spec}' needs 'hub:<owner/repo[:ref] or local dir>:<entry>', "
            "e.g. 'hub:pytorch/vision:resnet18' or 'hub:/path/to/repo:my_model'."
        )
    backbone = f"hub:{spec}"
    if Path(repo).expanduser().is_dir():
        repo = str(Path(repo).expanduser())
        source = "local"
        if not (Path(repo) / "hubconf.py").is_file():
            raise ConfigError(f"local hub repo {repo!r} has no hubconf.py; point to the folder that has it.")
    elif _GITHUB_REPO.match(repo):
        source = "github"
    else:
        raise ConfigError(
            f"hub repo {repo!r} is neither an existing directory nor 'owner/name[:ref]' "
            "(e.g. 'pytorch/vision')."
        )
    tv_name = entry if repo.split(":")[0] == "pytorch/vision" else None
    kwargs = {"weights": weights} if isinstance(weights, str) else {}
    model = _hub_call(repo, entry, source, kwargs, backbone, tv_name)
    if isinstance(weights, Path):
        load_into(model, read_state_dict(weights), ignore_missing=classifier_keys(model), source=str(weights))
    loaded = None if weights is None else f"file {weights}" if isinstance(weights, Path) else f"hub {weights}"
    return Backbone(model, strip_classifier(model), _hub_spec(tv_name, weights), loaded)


def _hub_call(
    repo: str, entry: str, source: str, kwargs: dict[str, Any], backbone: str, tv_name: str | None
) -> nn.Module:
    common: dict[str, Any] = {"source": source, "trust_repo": True, "skip_validation": True, "verbose": False}
    try:
        model = torch.hub.load(repo, entry, **common, **kwargs)  # type: ignore[no-untyped-call]
    except Exception as exc:
        if is_network_error(exc):
            weights = str(kwargs.get("weights", "the repo"))
            if "weights" not in kwargs or "no internet connection" in str(exc):
                raise WeightsUnavailableError(
                    f"cannot load {backbone!r}: the hub repo {repo!r} is not in the torch.hub cache "
                    f"({torch.hub.get_dir()}) and there is no network ({str(exc).strip()[:160]}). Clone it "
                    f"where there is network and use 'hub:/path/to/clone:{entry}', or use the 'torchvision:' "
                    "source for torchvision models."
                ) from exc
            raise unavailable(backbone, weights, exc, url=_tv_url(tv_name, weights)) from exc
        if isinstance(exc, RuntimeError) and "Cannot find callable" in str(exc):
            entries = _hub_entries(repo, source)
            raise UnknownNameError(unknown_name_message(f"entry of hub repo {repo}", entry, entries)) from exc
        raise
    if not isinstance(model, nn.Module):
        raise ConfigError(f"hub entry {backbone!r} returned a {type(model).__name__}, not an nn.Module.")
    return model


def _hub_entries(repo: str, source: str) -> list[str]:
    """The callables a hub repo offers (for 'did you mean'); the repo is already in the cache here."""
    if source == "github":
        found = torch.hub.list(repo, trust_repo=True, skip_validation=True, verbose=False)  # type: ignore[no-untyped-call]
        return [str(e) for e in found]
    spec = importlib.util.spec_from_file_location("_ensemblenet_hubconf", Path(repo) / "hubconf.py")
    if spec is None or spec.loader is None:
        return []
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    return [n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")]


def _tv_url(tv_name: str | None, weights: str) -> str | None:
    if tv_name is None:
        return None
    try:
        url = tv_member(tvm.get_model_weights(tv_name), weights, tv_name)[1].url
    except (KeyError, ValueError):
        return None
    return str(url)


def _hub_spec(tv_name: str | None, weights: WeightsArg) -> InputSpec:
    """pytorch/vision entries get torchvision's preprocessing; other repos the ImageNet default."""
    if tv_name is None or weights is None:
        return InputSpec()
    try:
        weights_enum = tvm.get_model_weights(tv_name)
        if isinstance(weights, Path):
            member = weights_enum.DEFAULT
        else:
            member = tv_member(weights_enum, weights, tv_name)[1]
    except (KeyError, ValueError):
        return InputSpec()
    return tv_spec(member)
