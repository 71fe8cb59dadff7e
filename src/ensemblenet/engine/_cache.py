"""Where exported engines live on disk, and the digest that names them.

An exported graph is a file named by a SHA-256 digest of everything its output depends on:

* the exported module: its structure (``repr``) and every parameter and buffer (names, dtypes,
  shapes and bytes, in a layout-independent order), so changed weights give a new file;
* the input: shape ``(3, H, W)`` and dtype;
* how it was made: :data:`ENGINE_RECIPE_VERSION` (bumped whenever the export code changes what
  it writes), the ONNX opset, and the versions of ensemblenet, torch, onnx and onnxruntime;
* for int8 graphs also the quantization settings and the calibration images (paths, labels,
  modification times and sizes).

A cache hit therefore rebuilds nothing, and a stale file is never used: it is simply never looked
up again. Files are written to a temporary name in the same folder and renamed into place
(atomic on POSIX), so a crash or two processes exporting at once never leave a half-written graph.

The folder is, in order: the ``cache_dir`` argument; ``$ENSEMBLENET_CACHE/engines``;
``$XDG_CACHE_HOME/ensemblenet/engines``; ``~/.cache/ensemblenet/engines``. Deleting it is always
safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__

__all__ = [
    "ENGINE_RECIPE_VERSION",
    "atomic_file",
    "cached_file",
    "engine_cache_dir",
    "module_digest",
    "versions",
    "write_json",
]

#: Bump when the export or quantization code changes what it writes (old files are then ignored).
ENGINE_RECIPE_VERSION = 1


def engine_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder for exported engines (see the module docstring for the order of choices)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("ENSEMBLENET_CACHE"):
        return Path(os.environ["ENSEMBLENET_CACHE"]).expanduser() / "engines"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "ensemblenet" / "engines"


def versions() -> dict[str, str]:
    """Versions that change what an exported or quantized graph contains or how it runs."""
    found = {"ensemblenet": __version__, "torch": torch.__version__, "recipe": str(ENGINE_RECIPE_VERSION)}
    for package in ("onnx", "onnxruntime"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "absent"
    return found


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    # Contiguous (so channels-last weights hash as the same bytes), viewed as raw bytes (any dtype).
    flat = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
    return flat.numpy().tobytes()


def module_digest(module: nn.Module, settings: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of ``module``'s structure, parameters and buffers, and of ``settings``
    (input shape, opset, quantization...; anything JSON-serializable) and :func:`versions`."""
    h = hashlib.sha256()
    header = {"settings": dict(settings), "versions": versions(), "module": repr(module)}
    h.update(json.dumps(header, sort_keys=True, default=str).encode())
    tensors = list(module.named_parameters(remove_duplicate=False)) + list(
        module.named_buffers(remove_duplicate=False)
    )
    for name, tensor in tensors:
        h.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        h.update(_tensor_bytes(tensor))
    return h.hexdigest()


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it to ``target`` (atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_json(target: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``target`` atomically."""
    with atomic_file(target) as tmp:
        tmp.write_text(json.dumps(dict(data), indent=1, sort_keys=True, default=str))


def cached_file(target: Path, build: Callable[[Path], None]) -> bool:
    """Build ``target`` with ``build(tmp_path)`` unless it exists; True when it had to be built."""
    if target.is_file():
        return False
    with atomic_file(target) as tmp:
        build(tmp)
    return True
