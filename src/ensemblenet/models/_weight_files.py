"""Local weights files: reading them and fitting them into a module.

Two jobs, kept apart so each can be tested alone:

* :func:`read_state_dict` reads a ``.pth``/``.pt``/``.bin`` (``torch.load(weights_only=True)``, so
  no code from the file ever runs) or a ``.safetensors`` file and unwraps the usual containers.
* :func:`load_into` fits a state dict into a module: exact names first, then common wrapper
  prefixes stripped, then :func:`remap_by_position` ("same tensors, other names", as in ports of
  a network between code bases), and otherwise a :class:`~ensemblenet.errors.WeightsError` that
  says what does not fit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from ..errors import WeightsError

__all__ = ["load_into", "read_state_dict", "remap_by_position"]

logger = logging.getLogger("ensemblenet.models")

# Keys under which training scripts commonly nest the real state dict.
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net")
# Prefixes added by DataParallel, wrappers and torch.compile.
_PREFIXES = ("module.", "model.", "backbone.", "_orig_mod.")
_BN_COUNTER = "num_batches_tracked"
_SHOWN = 5  # how many offending keys an error message lists


# --------------------------------------------------------------------------------------------------
# Reading files


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat ``{name: tensor}`` dict on the CPU.

    ``.safetensors`` files are read with ``safetensors``; anything else goes through
    ``torch.load(map_location="cpu", weights_only=True)``. A checkpoint that nests its weights
    under ``state_dict``, ``model_state_dict``, ``model`` or ``net`` is unwrapped.

    Raises:
        WeightsError: the file is missing, unreadable, contains pickled code or holds no tensors.
    """
    file = Path(path)
    if not file.is_file():
        raise WeightsError(f"weights file not found: {str(file)!r}. Pass the path of an existing file.")
    if file.suffix == ".safetensors":
        obj: object = _read_safetensors(file)
    else:
        try:
            obj = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch.load raises many types (pickle, zip, EOF, Runtime...)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(
                f"cannot read weights file {str(file)!r}: {type(exc).__name__}: {reason}. Files are read "
                "with torch.load(weights_only=True), so a file that pickles whole models or custom "
                "classes is refused; save model.state_dict() instead."
            ) from exc
    return _unwrap(obj, file)


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(str(file), device="cpu")
    except Exception as exc:  # safetensors raises its own error type for corrupt headers
        raise WeightsError(f"cannot read safetensors file {str(file)!r}: {exc}") from exc


def _unwrap(obj: object, file: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):  # e.g. {"model": {"state_dict": {...}}}; deeper nesting is not a checkpoint
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
        inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if isinstance(obj, Mapping):
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) == len(obj):
            return tensors
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        what = f"a mapping with keys {keys}"
    else:
        what = f"a {type(obj).__name__}"
    raise WeightsError(
        f"{str(file)!r} does not hold a state dict (a mapping of names to tensors): found {what}. "
        f"Save model.state_dict(), or nest it under one of {list(_CONTAINER_KEYS)}."
    )


# --------------------------------------------------------------------------------------------------
# Fitting a state dict into a module


def remap_by_position(
    source_sd: Mapping[str, torch.Tensor], target_sd: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename ``source_sd``'s tensors to ``target_sd``'s names by position.

    For the same network written twice with other attribute names (a port between code bases),
    the tensors come in the same order with the same shapes. BatchNorm ``num_batches_tracked``
    counters are dropped on both sides first (some files have them, some do not); they are absent
    from the result, so the target keeps its own.

    Returns:
        A new dict ``{target_name: source_tensor}``; the input tensors are not copied or changed.

    Raises:
        WeightsError: the counts differ, or a shape differs at some position.
    """
    src = [(k, v) for k, v in source_sd.items() if not k.endswith(_BN_COUNTER)]
    dst = [(k, v) for k, v in target_sd.items() if not k.endswith(_BN_COUNTER)]
    if len(src) != len(dst):
        raise WeightsError(
            f"cannot remap by position: the file has {len(src)} tensors, the model {len(dst)} "
            f"(BatchNorm {_BN_COUNTER} not counted)."
        )
    out: dict[str, torch.Tensor] = {}
    for i, ((s_key, s_val), (d_key, d_val)) in enumerate(zip(src, dst, strict=True)):
        if tuple(s_val.shape) != tuple(d_val.shape):
            raise WeightsError(
                f"cannot remap by position: tensor #{i} is {s_key!r} {tuple(s_val.shape)} in the file "
                f"but {d_key!r} {tuple(d_val.shape)} in the model."
            )
        out[d_key] = s_val
    return out


def load_into(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    ignore_missing: Sequence[str] = (),
    source: str = "the state dict",
) -> None:
    """Load ``state_dict`` into ``module``, tolerating renamed but identical tensors.

    Tried in order: exact names; names with a wrapper prefix (``module.``, ``model.``,
    ``backbone.``, ``_orig_mod.``) stripped; :func:`remap_by_position`. The first that fits all
    tensors with equal shapes is loaded.

    Args:
        module: the module to fill in place.
        state_dict: the tensors to load.
        ignore_missing: module keys that may be absent from ``state_dict`` (e.g. a classifier that
            will be stripped anyway); they keep their current values.
        source: what ``state_dict`` is (a file path), for messages.

    Raises:
        WeightsError: no strategy fits; the message lists missing and unexpected keys and the first
            shape mismatch.
    """
    target = module.state_dict()
    optional = set(ignore_missing)
    candidates = _prefix_variants(dict(state_dict))
    for candidate in candidates:
        if _fits(candidate, target, optional):
            _load(module, candidate, target)
            return
    base = candidates[-1]  # the most stripped variant is the one the error talks about
    for sub_target in _positional_targets(target, optional):
        try:
            remapped = remap_by_position(base, sub_target)
        except WeightsError:
            continue
        logger.info(
            "loaded %s by position: %d tensors have other names but the same shapes in the same order",
            source,
            len(remapped),
        )
        _load(module, remapped, target)
        return
    raise WeightsError(_mismatch_message(base, target, optional, source, module))


def _prefix_variants(sd: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """``sd`` and, successively, ``sd`` without a prefix shared by every key."""
    variants = [sd]
    changed = True
    while changed and sd:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                variants.append(sd)
                changed = True
                break
    return variants


def _fits(sd: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], optional: set[str]) -> bool:
    missing = {k for k in target if k not in sd and k not in optional and not k.endswith(_BN_COUNTER)}
    if missing or any(k not in target for k in sd):
        return False
    return all(tuple(v.shape) == tuple(target[k].shape) for k, v in sd.items())


def _positional_targets(
    target: Mapping[str, torch.Tensor], optional: set[str]
) -> list[dict[str, torch.Tensor]]:
    """The full target, then (for a headless file) the target without the optional keys."""
    full = dict(target)
    without = {k: v for k, v in target.items() if k not in optional}
    return [full, without] if len(without) != len(full) else [full]


def _load(module: nn.Module, sd: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> None:
    # strict=False only because keys checked by _fits may be absent (ignored or BN counters);
    # anything else left over here would be a bug in this module, so it is checked again.
    result = module.load_state_dict(dict(sd), strict=False)
    if result.unexpected_keys:
        raise WeightsError(f"internal error: unexpected keys after matching: {result.unexpected_keys[:5]}")
    logger.debug("loaded %d tensors; %d module keys kept their values", len(sd), len(result.missing_keys))


def _mismatch_message(
    sd: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    optional: set[str],
    source: str,
    module: nn.Module,
) -> str:
    missing = [k for k in target if k not in sd and k not in optional and not k.endswith(_BN_COUNTER)]
    unexpected = [k for k in sd if k not in target]
    shape = next(
        (
            f"{k!r} is {tuple(v.shape)} in the file but {tuple(target[k].shape)} in the model"
            for k, v in sd.items()
            if k in target and tuple(v.shape) != tuple(target[k].shape)
        ),
        None,
    )
    parts = [f"{source} does not fit the {type(module).__name__} architecture:"]
    parts.append(f"{len(missing)} missing key(s) {_first(missing)},")
    parts.append(f"{len(unexpected)} unexpected key(s) {_first(unexpected)}")
    parts[-1] += f"; first shape mismatch: {shape}." if shape else "."
    n_src = sum(1 for k in sd if not k.endswith(_BN_COUNTER))
    n_dst = sum(1 for k in target if not k.endswith(_BN_COUNTER))
    parts.append(f"Matching by position failed too ({n_src} tensors in the file, {n_dst} in the model).")
    parts.append(
        "Fix: pass the backbone these weights were trained for, or a weights file made for this backbone."
    )
    return " ".join(parts)


def _first(keys: Sequence[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_SHOWN])
    return f"[{shown}{', ...' if len(keys) > _SHOWN else ''}]"
