"""The one file container of ensemblenet: model, ensemble and trainer-state files.

A file is a `safetensors <https://huggingface.co/docs/safetensors>`_ file: the tensors, plus two
metadata strings. ``"ensemblenet"`` holds the settings as canonical JSON (sorted keys, no spaces,
ASCII), with every tensor replaced by ``{"__tensor__": "<name>"}``; ``"sha256"`` holds one digest
over that JSON text and every tensor's name, dtype, shape and bytes, so a change to a class name,
an input size or one weight is detected on load. Nothing in the file is code: reading it parses
JSON and copies tensor bytes, and never unpickles, imports or runs anything.

Plain data other than JSON's own types is tagged: ``{"__items__": [[key, value], ...]}`` for a
mapping whose keys are not all strings (an optimizer's parameter indices), ``{"__tuple__": [...]}``
and ``{"__float__": "nan" | "inf" | "-inf"}``.

Reading refuses anything that is not a regular file *before* opening it for reading (a named pipe
would block forever), checks an optional published sha256 of the whole file first, then says what
a foreign file is (an ONNX export, an image, a text file...) instead of failing obscurely. 0.1
files (``torch.save`` zip archives) are still read, with ``torch.load(weights_only=True)``, for
one release.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import struct
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import safetensors.torch
import torch

from ..errors import CheckpointError
from ._file_kinds import describe_foreign, not_regular, regular_file_bytes
from ._plain_data import PlainDecoder, encode_plain

__all__ = [
    "FileContents",
    "atomic_write",
    "file_sha256",
    "peek_format",
    "read_document",
    "write_document",
]

_SETTINGS_KEY, _DIGEST_KEY = "ensemblenet", "sha256"
_TENSOR, _ITEMS, _TUPLE, _FLOAT = "__tensor__", "__items__", "__tuple__", "__float__"
_MAX_HEADER = 64 << 20  # bytes of safetensors header we are willing to parse (safetensors allows 100 MB)
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class FileContents(NamedTuple):
    """What :func:`read_document` found: the settings with tensors in place, and how it was stored."""

    document: dict[str, Any]
    #: sha256 of the whole file, as ``sha256sum`` prints it
    file_sha256: str
    #: True for a 0.1 file (``torch.save`` archive): its own digest is checked by the caller
    legacy: bool


# --------------------------------------------------------------------------- digest


def _digest(settings: str, tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the settings text and, in name order, each tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(b"ensemblenet file\n" + settings.encode("utf-8") + b"\n")
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|{t.numel()}\n".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().data)  # no copy of the bytes
    return digest.hexdigest()


# --------------------------------------------------------------------------- writing


def atomic_write(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to a temporary file in ``path``'s folder, fsync, then rename it over ``path``.

    A crash at any moment leaves either the old file or the new one, never a torn file; a failed
    write (disk full, quota, permission) removes the temporary file and raises an ``OSError``
    that names ``path`` and what failed.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _write_error(target, exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(handle.fileno(), view) :]
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException as exc:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_error(target, exc) from None
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        dir_fd = os.open(target.parent, os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return target


def _write_error(target: Path, exc: OSError) -> OSError:
    reason = exc.strerror or str(exc)
    return type(exc)(exc.errno, f"cannot write {target}: {reason} (nothing was changed there)", str(target))


def write_document(document: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``document`` (plain data with tensors anywhere inside) as one file, atomically."""
    settings, tensors = encode_plain(document)
    metadata = {_SETTINGS_KEY: settings, _DIGEST_KEY: _digest(settings, tensors)}
    seen: set[tuple[int, int]] = set()  # (storage address, offset) of each tensor
    for name, t in tensors.items():  # safetensors refuses tensors that share memory (tied weights)
        key = (t.untyped_storage().data_ptr(), int(t.storage_offset()))
        if t.numel() and key in seen:
            tensors[name] = t.clone()
        seen.add(key)
    return atomic_write(path, safetensors.torch.save(tensors, metadata=metadata))


# --------------------------------------------------------------------------- reading


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of the file's bytes (what ``sha256sum`` prints), for publishing next to a file."""
    return hashlib.sha256(regular_file_bytes(Path(path), "file")).hexdigest()


def peek_format(path: str | os.PathLike[str]) -> str | None:
    """The ``format`` tag of an ensemblenet file (``"ensemblenet.model"``, ``"ensemblenet.ensemble"``),
    read from its header without reading its tensors or checking it; None when it is not a regular
    file or has no readable tag (loading it then says why)."""
    try:
        if not_regular(os.stat(path).st_mode) is not None:
            return None
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            if not_regular(os.fstat(fd).st_mode) is not None:
                return None
            head = handle.read(8)
            if head[:4] == b"PK\x03\x04":
                return _peek_torch_archive(path)
            if len(head) < 8 or struct.unpack("<Q", head)[0] > _MAX_HEADER:
                return None
            header = json.loads(handle.read(struct.unpack("<Q", head)[0]).decode("utf-8"))
        found = json.loads(header["__metadata__"][_SETTINGS_KEY]).get("format")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    return found if isinstance(found, str) else None


def _peek_torch_archive(path: str | os.PathLike[str]) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not readable as a 0.1 file: loading it reports why
        return None
    found = payload.get("format") if isinstance(payload, dict) else None
    return found if isinstance(found, str) else None


def read_document(
    path: str | os.PathLike[str],
    *,
    what: str,
    expected_sha256: str | None = None,
    map_location: str | torch.device = "cpu",
) -> FileContents:
    """Read and verify one ensemblenet file; return its settings with the tensors in place.

    Args:
        path: the file.
        what: the kind of file, for messages ("model file", "ensemble file").
        expected_sha256: the published sha256 of the whole file (hex, as ``sha256sum`` prints it);
            checked before anything in the file is parsed.
        map_location: where the tensors go.

    Raises:
        CheckpointError: not a regular file, unreadable, another sha256 than expected, not an
            ensemblenet file (the message says what it is), malformed, or modified (digest).
    """
    path = Path(path)
    shown = repr(str(path))
    data = regular_file_bytes(path, what)
    actual = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None:
        wanted = str(expected_sha256).strip().lower()
        if actual != wanted:
            raise CheckpointError(
                f"{what} {shown} has sha256 {actual}, not the expected {wanted}: it is not the published "
                "file (modified, truncated or replaced); do not use it, download it again from its source"
            )
    if _looks_like_safetensors(data, complete=False) and not _looks_like_safetensors(data):
        raise CheckpointError(
            f"cannot read {what} {shown}: it is truncated (its header alone is "
            f"{struct.unpack('<Q', data[:8])[0]} bytes, the file has {len(data)}); restore a complete copy"
        )
    if _looks_like_safetensors(data):
        document = _read_safetensors(data, what, shown)
        legacy = False
    elif data[:4] == b"PK\x03\x04" or data[:1] == b"\x80":
        document = _read_torch_archive(data, what, shown)
        legacy = True
    else:
        raise CheckpointError(f"{shown} is not an ensemblenet {what}: {describe_foreign(data, path)}")
    if map_location not in ("cpu", torch.device("cpu")):
        document = _moved(document, torch.device(map_location))
    return FileContents(document, actual, legacy)


def _moved(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _moved(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, device) for v in value]
    return value


def _looks_like_safetensors(data: bytes, *, complete: bool = True) -> bool:
    """A little-endian header length, then a JSON object (``complete``: that fits in the file)."""
    if len(data) < 10:
        return False
    (size,) = struct.unpack("<Q", data[:8])
    limit = len(data) - 8 if complete else _MAX_HEADER
    return 2 <= size <= limit and data[8:9] == b"{"


def _read_safetensors(data: bytes, what: str, shown: str) -> dict[str, Any]:
    def fail(problem: str) -> CheckpointError:
        return CheckpointError(
            f"{shown} is not a valid ensemblenet {what}: {problem}. Re-create it with ensemblenet, or "
            "restore a good copy"
        )

    (size,) = struct.unpack("<Q", data[:8])
    if size > _MAX_HEADER:
        raise fail(f"its header is {size} bytes, more than the {_MAX_HEADER} this reader accepts")
    try:
        header = json.loads(data[8 : 8 + size].decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise fail(f"its header is not valid JSON ({str(exc)[:120]})") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or not isinstance(metadata.get(_SETTINGS_KEY), str):
        raise CheckpointError(
            f"{shown} is not an ensemblenet {what}: it is a safetensors file without ensemblenet settings "
            "(plain weights?). For a state dict of backbone weights use load_backbone(name, weights=path)"
        )
    settings, recorded = metadata[_SETTINGS_KEY], metadata.get(_DIGEST_KEY)
    try:
        with warnings.catch_warnings():  # bytes are read-only; tensors are copied out of them below
            warnings.simplefilter("ignore", UserWarning)
            tensors = safetensors.torch.load(data)
    except Exception as exc:  # the Rust parser raises SafetensorError (no Python base) or others
        raise fail(f"its tensors cannot be read ({type(exc).__name__}: {str(exc)[:160]})") from None
    actual = _digest(settings, tensors)
    if recorded != actual:
        raise CheckpointError(
            f"{shown} is corrupted or was modified: its sha256 is {actual[:16]}..., the file records "
            f"{str(recorded)[:16]}.... Re-create it or restore a good copy"
        )
    try:
        raw = json.loads(settings, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise fail(f"its settings are not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(raw, dict):
        raise fail(f"its settings are a {type(raw).__name__}, not a JSON object")
    decoder = PlainDecoder(tensors, fail)
    try:
        document = decoder(raw, "settings")
    except RecursionError:
        raise fail("its settings are nested too deeply") from None
    unused = sorted(set(tensors) - decoder.used)
    if unused:
        raise fail(f"it holds tensor {unused[0]!r} that its settings do not mention")
    return document  # type: ignore[no-any-return]


def _no_constants(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _read_torch_archive(data: bytes, what: str, shown: str) -> dict[str, Any]:
    """A 0.1 file: ``torch.load(weights_only=True)``, which refuses any pickled code."""
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol note; the error below says more
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = [line.strip() for line in str(exc).splitlines() if "Unsupported" in line]
        detail = f" ({found[0][:200]})" if found else ""
        raise CheckpointError(
            f"refused to load {shown}: it contains pickled objects other than plain data and tensors "
            f"(possibly code){detail}; ensemblenet files never do, so it was not written by ensemblenet. "
            "Only load files you trust"
        ) from None
    except Exception as exc:  # torch's readers raise RuntimeError, EOFError, ValueError...
        raise CheckpointError(
            f"cannot read {what} {shown}: truncated, or a zip/pickle file that is not an ensemblenet file "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"{shown} is not an ensemblenet {what}: it is a torch file holding a {type(payload).__name__}"
        )
    return payload
