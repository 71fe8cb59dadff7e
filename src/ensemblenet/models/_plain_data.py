"""Plain data (JSON types, tuples, non-finite floats, int-keyed mappings, tensors) <-> canonical JSON.

The settings of an ensemblenet file are JSON; a tensor anywhere inside becomes a reference
``{"__tensor__": "<name>"}`` to a tensor stored beside the JSON. What JSON cannot say is tagged:
``{"__items__": [[key, value], ...]}`` for a mapping whose keys are not all strings (an
optimizer's parameter indices) or start with ``__``, ``{"__tuple__": [...]}`` and
``{"__float__": "nan" | "inf" | "-inf"}``. Decoding puts each tensor back exactly once and refuses
unknown tags, so a file cannot smuggle in anything but plain data and tensors.

>>> import torch
>>> settings, tensors = encode_plain({"lr": 1e-3, "betas": (0.9, 0.999), "state": {0: torch.ones(2)}})
>>> settings
'{"betas":{"__tuple__":[0.9,0.999]},"lr":0.001,"state":{"__items__":[[0,{"__tensor__":"state/0"}]]}}'
>>> PlainDecoder(tensors, ValueError)(json.loads(settings), "settings")["state"][0]
tensor([1., 1.])
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..errors import ConfigError

__all__ = ["PlainDecoder", "encode_plain"]

_TENSOR, _ITEMS, _TUPLE, _FLOAT = "__tensor__", "__items__", "__tuple__", "__float__"
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def encode_plain(document: Mapping[str, Any]) -> tuple[str, dict[str, torch.Tensor]]:
    """``document`` as canonical JSON (sorted keys, no spaces, ASCII) and the tensors it refers to.

    Raises:
        ConfigError: a value that is not plain data (the message names where it is).
    """
    tensors: dict[str, torch.Tensor] = {}
    return _canonical_json(_encode(document, (), tensors)), tensors


def _encode(value: Any, path: tuple[str, ...], tensors: dict[str, torch.Tensor]) -> Any:
    where = ".".join(path) or "(top)"
    if isinstance(value, torch.Tensor):
        name = "/".join(path)
        while name in tensors:  # cannot happen with distinct paths, but never overwrite a tensor
            name += "#"
        tensors[name] = value.detach().cpu().contiguous()
        return {_TENSOR: name}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else {_FLOAT: repr(number)}
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, (*path, k), tensors) for k, v in value.items()}
        items = []
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise ConfigError(f"cannot store the key {key!r} of {where}: keys must be strings or ints")
            items.append([key, _encode(item, (*path, str(key)), tensors)])
        return {_ITEMS: items}
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, (*path, str(i)), tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, (*path, str(i)), tensors) for i, v in enumerate(value)]
    raise ConfigError(
        f"cannot store a {type(value).__name__} at {where}: ensemblenet files hold plain data only "
        "(str, int, float, bool, None, lists, dicts and tensors); convert it, e.g. str(path)"
    )


class PlainDecoder:
    """Puts the tensors back in place of their ``__tensor__`` references, each used exactly once."""

    def __init__(self, tensors: dict[str, torch.Tensor], fail: Callable[[str], Exception]) -> None:
        self.tensors, self.fail, self.used = tensors, fail, set[str]()

    def __call__(self, value: Any, where: str) -> Any:
        if isinstance(value, list):
            return [self(v, f"{where}.{i}") for i, v in enumerate(value)]
        if not isinstance(value, dict):
            return value
        tags = [k for k in value if k.startswith("__")]
        if not tags:
            return {k: self(v, f"{where}.{k}") for k, v in value.items()}
        if len(value) != 1 or tags[0] not in (_TENSOR, _ITEMS, _TUPLE, _FLOAT):
            raise self.fail(f"{where} holds an unknown tag {tags[0]!r}")
        tag, inner = tags[0], value[tags[0]]
        if tag == _TENSOR:
            if not isinstance(inner, str) or inner not in self.tensors:
                raise self.fail(f"{where} refers to a tensor {inner!r} that the file does not hold")
            if inner in self.used:
                raise self.fail(f"{where} refers to tensor {inner!r} a second time")
            self.used.add(inner)
            return self.tensors[inner]
        if tag == _FLOAT:
            if inner not in _NON_FINITE:
                raise self.fail(f"{where} must be 'nan', 'inf' or '-inf', got {inner!r}")
            return _NON_FINITE[inner]
        if not isinstance(inner, list):
            raise self.fail(f"{where}.{tag} must be a list")
        if tag == _TUPLE:
            return tuple(self(v, f"{where}.{i}") for i, v in enumerate(inner))
        out: dict[Any, Any] = {}
        for pair in inner:
            ok = isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], (str, int))
            if not ok or isinstance(pair[0], bool) or pair[0] in out:
                raise self.fail(f"{where} has a malformed or repeated [key, value] pair: {str(pair)[:80]}")
            out[pair[0]] = self(pair[1], f"{where}.{pair[0]}")
        return out


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
