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
import numbers
import os
import pickle
import stat
import struct
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import safetensors.torch
import torch

from ..errors import CheckpointError, ConfigError

__all__ = [
    "FileContents",
    "atomic_write",
    "describe_foreign",
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


# --------------------------------------------------------------------------- plain data <-> JSON


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


class _Decoder:
    """Puts the tensors back in place of their ``__tensor__`` references, each used exactly once."""

    def __init__(self, tensors: dict[str, torch.Tensor], fail: Any) -> None:
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
    tensors: dict[str, torch.Tensor] = {}
    settings = _canonical_json(_encode(document, (), tensors))
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
    return hashlib.sha256(_regular_file_bytes(Path(path), "file")).hexdigest()


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode: int) -> str | None:
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "not a regular file"


def _regular_file_bytes(path: Path, what: str) -> bytes:
    """The bytes of ``path``, which must be a regular file: checked before opening (``stat``), and
    on the open descriptor (``fstat``), which is opened non-blocking so that a pipe swapped in
    between cannot hang the reader."""
    shown = repr(str(path))
    try:
        kind = _not_regular(os.stat(path).st_mode)
    except FileNotFoundError:
        raise CheckpointError(f"{what} {shown} does not exist or is not a file") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {what} {shown}: {exc.strerror or exc}") from None
    if kind is not None:
        raise CheckpointError(f"{what} {shown} is {kind}, not a regular file; pass the file itself")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise CheckpointError(f"cannot open {what} {shown}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        kind = _not_regular(os.fstat(fd).st_mode)
        if kind is not None:
            raise CheckpointError(f"{what} {shown} is {kind}, not a regular file; pass the file itself")
        try:
            return handle.read()
        except OSError as exc:
            raise CheckpointError(f"cannot read {what} {shown}: {exc.strerror or exc}") from None


def peek_format(path: str | os.PathLike[str]) -> str | None:
    """The ``format`` tag of an ensemblenet file (``"ensemblenet.model"``, ``"ensemblenet.ensemble"``),
    read from its header without reading its tensors or checking it; None when it is not a regular
    file or has no readable tag (loading it then says why)."""
    try:
        if _not_regular(os.stat(path).st_mode) is not None:
            return None
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            if _not_regular(os.fstat(fd).st_mode) is not None:
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
    data = _regular_file_bytes(path, what)
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
    decoder = _Decoder(tensors, fail)
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


# --------------------------------------------------------------------------- what is this file?

_SIGNATURES = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"%PDF", "a PDF document"),
    (b"\x7fELF", "an executable (ELF)"),
)
_IMAGE_ADVICE = (
    "images go after the options (ensemblenet predict -m MODEL IMAGE...), the model file after -m; in "
    "Python pass it to Ensemble.predict"
)
_MODEL_ADVICE = "pass a file written by save_model, Ensemble.save or ensemblenet train/ensemble"


def describe_foreign(data: bytes, path: Path) -> str:
    """What a file that is not an ensemblenet file looks like, and what to do with it (one clause)."""
    if not data:
        return f"it is empty (0 bytes); {_MODEL_ADVICE}"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return f"it is a WebP image; {_IMAGE_ADVICE}"
    for magic, kind in _SIGNATURES:
        if data.startswith(magic):
            advice = _IMAGE_ADVICE if kind.endswith("image") else _MODEL_ADVICE
            return f"it is {kind}; {advice}"
    if _looks_like_onnx(data) or path.suffix.lower() == ".onnx":
        return (
            "it looks like an ONNX model (an export, e.g. from ensemblenet export): run it with onnxruntime "
            "(onnxruntime.InferenceSession), or pass the model file it was exported from"
        )
    text = _as_text(data[:4096])
    if text is not None:
        first = " ".join(text.split())[:40]
        return f"it is a text file (starting {first!r}); {_MODEL_ADVICE}"
    return f"it is binary data of no known kind (starting {data[:8].hex()}); {_MODEL_ADVICE}"


def _looks_like_onnx(data: bytes) -> bool:
    # A ModelProto starts with field 1 (ir_version, a small varint: tag 0x08) followed by
    # producer_name (field 2, tag 0x12), or opset_import (field 8, tag 0x42) and the graph (0x3a).
    return len(data) > 4 and data[0] == 0x08 and 1 <= data[1] <= 30 and data[2] in (0x12, 0x1A, 0x3A, 0x42)


def _as_text(head: bytes) -> str | None:
    if b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the 4096-byte boundary
            return None
        text = head[: exc.start].decode("utf-8")
    printable = sum(ch.isprintable() or ch in "\t\r\n" for ch in text)
    return text if text and printable >= 0.95 * len(text) else None
