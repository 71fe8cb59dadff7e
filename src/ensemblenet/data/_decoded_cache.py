"""A decoded-image cache: decode and resize each image once, read ``uint8`` pixels afterwards.

On a small CPU every epoch of the plain recipe decodes every JPEG again and resizes it again. The
cache keeps, for each :class:`~ensemblenet.data.View` and each list of samples, one memory-mapped
``uint8`` array of shape ``(N, 3, H, W)`` on disk, plus a small per-row record::

    cache_dir/<key>/pixels.u8      N x 3 x H x W uint8 (memory-mapped)
    cache_dir/<key>/stamp.i64      N int64: fingerprint of (path, mtime_ns, size) at write time
    cache_dir/<key>/status.u8      N uint8: 0 empty, 1 pixels valid, 2 file unreadable
    cache_dir/<key>/reason.s       N x 120 bytes: why an unreadable file was skipped
    cache_dir/<key>/meta.json      what the key stands for (for people reading the folder)

``<key>`` hashes the view (size, interpolation), :data:`CACHE_VERSION` and the ordered sample
paths. A row is used only while its stamp matches the file's current ``(path, mtime_ns, size)``,
so a changed file is decoded again (only that row), and a changed view or library cache version
uses another folder. Unreadable files are remembered as such (same stamp rule), so a broken file
costs one decode attempt, not one per epoch.

Rows are written by whichever process decodes them (DataLoader workers included): each row is a
disjoint byte range, the pixels are written before the status, and the stamp last, so a crash
mid-write leaves a row that simply does not match and is decoded again.

>>> cache = DecodedCache("/tmp/ensemblenet-cache")  # doctest: +SKIP
>>> loader = make_loader(train, model.spec, cache_dir="/tmp/ensemblenet-cache")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["CACHE_VERSION", "DecodedCache", "ViewCache", "file_stamp"]

logger = logging.getLogger("ensemblenet.data")

#: Bumped whenever decoding or resizing changes, so old caches are not read as new ones.
CACHE_VERSION = 1
_EMPTY, _OK, _UNREADABLE = 0, 1, 2
_REASON_BYTES = 120


def file_stamp(path: str | os.PathLike[str]) -> int:
    """A non-zero int64 fingerprint of ``(path, mtime_ns, size)``; 0 when the file cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return 0
    text = f"{os.fspath(path)}\0{st.st_mtime_ns}\0{st.st_size}".encode("utf-8", "surrogatepass")
    value = int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little", signed=True)
    return value or 1


def _open_array(path: Path, dtype: Any, shape: tuple[int, ...]) -> np.memmap[Any, Any]:
    """Open (creating, zero-filled and sparse, when absent or of the wrong size) a memory-mapped array."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if not path.exists() or path.stat().st_size != nbytes:
        with open(path, "wb") as fh:  # truncate() makes a sparse file: no disk used until written
            fh.truncate(nbytes)
    return np.memmap(path, dtype=dtype, mode="r+", shape=shape)


class ViewCache:
    """The cache rows of one view for one ordered list of files (see the module docstring).

    Arrays are opened lazily, in the process that first reads or writes, so the object pickles
    cheaply into DataLoader workers (each worker maps the files itself).
    """

    def __init__(self, folder: Path, paths: Sequence[str], size: tuple[int, int]) -> None:
        self.folder = folder
        self.paths = list(paths)
        self.size = size
        self._arrays: dict[str, np.memmap[Any, Any]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = None  # memmaps are re-opened per process
        return state

    def _maps(self) -> dict[str, np.memmap[Any, Any]]:
        if self._arrays is None:
            n, (h, w) = len(self.paths), self.size
            self.folder.mkdir(parents=True, exist_ok=True)
            self._arrays = {
                "pixels": _open_array(self.folder / "pixels.u8", np.uint8, (max(n, 1), 3, h, w)),
                "stamp": _open_array(self.folder / "stamp.i64", np.int64, (max(n, 1),)),
                "status": _open_array(self.folder / "status.u8", np.uint8, (max(n, 1),)),
                "reason": _open_array(self.folder / "reason.s", np.uint8, (max(n, 1), _REASON_BYTES)),
            }
        return self._arrays

    def lookup(self, index: int, stamp: int) -> torch.Tensor | str | None:
        """The cached ``uint8 (3, H, W)`` tensor, the reason string of a remembered unreadable file,
        or None on a miss (never written, or written for another version of the file)."""
        maps = self._maps()
        if stamp == 0 or int(maps["stamp"][index]) != stamp:
            return None
        status = int(maps["status"][index])
        if status == _OK:
            # np.array copies out of the map: the tensor must not alias a file another process rewrites.
            return torch.from_numpy(np.array(maps["pixels"][index]))
        if status == _UNREADABLE:
            return bytes(maps["reason"][index]).rstrip(b"\0").decode("utf-8", "replace") or "unreadable"
        return None

    def store(self, index: int, stamp: int, pixels: torch.Tensor) -> None:
        """Write a decoded row (pixels first, stamp last, so a torn write never matches)."""
        if stamp == 0:
            return
        maps = self._maps()
        maps["stamp"][index] = 0
        maps["pixels"][index] = pixels.numpy()
        maps["status"][index] = _OK
        maps["stamp"][index] = stamp

    def store_unreadable(self, index: int, stamp: int, reason: str) -> None:
        """Remember that the file at ``index`` (as stamped) cannot be decoded, and why."""
        if stamp == 0:
            return
        maps = self._maps()
        encoded = reason.encode("utf-8")[:_REASON_BYTES]
        maps["stamp"][index] = 0
        maps["reason"][index] = 0
        maps["reason"][index, : len(encoded)] = np.frombuffer(encoded, dtype=np.uint8)
        maps["status"][index] = _UNREADABLE
        maps["stamp"][index] = stamp


class DecodedCache:
    """A folder of decoded-image caches, one :class:`ViewCache` per (view, ordered file list).

    Args:
        root: the cache folder (created when needed). Safe to delete at any time between runs.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        if not isinstance(root, (str, os.PathLike)) or not os.fspath(root):
            raise ConfigError(f"cache_dir must be a folder path (str or Path), got {root!r}")
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"cache_dir {os.fspath(root)!r} exists and is not a folder; pick another path")

    def __repr__(self) -> str:
        return f"DecodedCache({os.fspath(self.root)!r})"

    def view_cache(
        self, paths: Sequence[str | os.PathLike[str]], size: tuple[int, int], interpolation: str
    ) -> ViewCache:
        """The rows for ``paths`` (in this order) resized to ``size`` with ``interpolation``."""
        names = [os.path.abspath(p) for p in paths]  # the same files from another working directory
        digest = hashlib.blake2b(digest_size=12)
        digest.update(f"v{CACHE_VERSION}\0{size[0]}x{size[1]}\0{interpolation}\0".encode())
        for name in names:
            digest.update(name.encode("utf-8", "surrogatepass") + b"\0")
        folder = self.root / f"{size[0]}x{size[1]}-{interpolation}-{digest.hexdigest()}"
        meta = folder / "meta.json"
        if not meta.exists():
            folder.mkdir(parents=True, exist_ok=True)
            info = {
                "version": CACHE_VERSION,
                "size": list(size),
                "interpolation": interpolation,
                "n": len(names),
            }
            tmp = folder / f"meta.json.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(info))
            os.replace(tmp, meta)
            logger.info("new decoded-image cache %s for %d images", folder, len(names))
        return ViewCache(folder, names, (int(size[0]), int(size[1])))
