"""What a file is: regular files only (checked before opening), and a name for a foreign file.

A named pipe opened for reading blocks until someone writes to it, so :func:`regular_file_bytes`
looks at the file with ``stat`` first and opens it non-blocking, checking again with ``fstat``.
:func:`describe_foreign` tells an ONNX export, an image, a text file or random bytes apart, and
says what to do with it, instead of calling every unreadable file "possibly code".
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import CheckpointError

__all__ = ["describe_foreign", "not_regular", "regular_file_bytes"]

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def not_regular(mode: int) -> str | None:
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "not a regular file"


def regular_file_bytes(path: Path, what: str) -> bytes:
    """The bytes of ``path``, which must be a regular file: checked before opening (``stat``), and
    on the open descriptor (``fstat``), which is opened non-blocking so that a pipe swapped in
    between cannot hang the reader."""
    shown = repr(str(path))
    try:
        kind = not_regular(os.stat(path).st_mode)
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
        kind = not_regular(os.fstat(fd).st_mode)
        if kind is not None:
            raise CheckpointError(f"{what} {shown} is {kind}, not a regular file; pass the file itself")
        try:
            return handle.read()
        except OSError as exc:
            raise CheckpointError(f"cannot read {what} {shown}: {exc.strerror or exc}") from None


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
