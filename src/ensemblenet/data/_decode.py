"""Safe decoding of one image file.

:func:`load_image` is the only place where files are decoded: it honours EXIF orientation, turns
every PIL mode into RGB the way a person would expect (alpha over white, 16-bit scaled rather than
clipped) and turns every way a file can be broken into one :class:`UnreadableImageError`.
:func:`check_image` is the cheap scan-time test.
"""

from __future__ import annotations

import errno
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError

__all__ = ["FORMATS", "UnreadableImageError", "check_image", "load_image"]

logger = logging.getLogger("ensemblenet.data")

# Only the formats IMAGE_EXTENSIONS stands for (content sniffing still opens a PNG named .jpg). This
# also keeps PIL from handing crafted files to plugins such as EPS, which runs Ghostscript.
FORMATS = ("JPEG", "PNG", "BMP", "DIB", "GIF", "WEBP", "TIFF")  # JPEG includes MPO
_BOMB_HINT = (
    "PIL refuses it as a possible decompression bomb; if you trust the file, raise "
    "PIL.Image.MAX_IMAGE_PIXELS (now {limit}) before loading"
)


class UnreadableImageError(DataError):
    """An image file that cannot be decoded: empty, truncated, not an image, or too large.

    Attributes:
        path: the file.
        reason: why it cannot be read, in a few words.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across DataLoader worker processes
        return (type(self), (self.path, self.reason))


def _describe(exc: BaseException, file: Path | None = None) -> str:
    if isinstance(exc, FileNotFoundError):
        if file is not None and file.is_symlink():
            return f"dangling symbolic link (to {os.readlink(file)!r}, which does not exist)"
        return "file not found"
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return "symbolic link loop (the link points back to itself)"
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"{exc} {_BOMB_HINT.format(limit=Image.MAX_IMAGE_PIXELS)}"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image in a supported format (JPEG, PNG, BMP, GIF, WebP, TIFF)"
    text = str(exc) or "no details"
    return f"{type(exc).__name__}: {text}"


def load_image(path: str | os.PathLike[str], size: tuple[int, int] | None = None) -> Image.Image:
    """Decode ``path`` into an RGB image, rotated as its EXIF orientation says.

    With ``size`` = (height, width), a JPEG may be decoded at a reduced scale (PIL's draft mode:
    1/2, 1/4 or 1/8, done inside the DCT, so much faster for large photos) chosen so that both
    sides stay at least ``max(size)``; the result is then resized as usual. The pixels differ from
    a full decode followed by the same resize by a few grey levels (see ``tests/test_cache.py``).
    Other formats, and ``size=None`` (the default), decode at full resolution.

    Mode conversions: ``1``/``L``/``CMYK``/``YCbCr`` convert directly; anything with alpha or a
    transparency key (``LA``, ``P``, ``PA``, ``RGBA``...) is composited on white, not stripped
    (stripping leaves whatever colour hides under transparent pixels, often black); 16-bit and
    32-bit integer images (``I;16``, ``I``) are scaled from 0..65535 to 0..255; float images
    (``F``) from 0..1 or 0..255. Animated images give their first frame.

    PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is kept, and exceeding it is an
    error rather than a warning. Other PIL warnings (corrupt EXIF...) are logged at DEBUG level:
    the pixels are still good. Not thread-safe with respect to :mod:`warnings` filters.

    Raises:
        UnreadableImageError: missing, empty, truncated or corrupt file, not an image, too large.
    """
    file = Path(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            if file.stat().st_size == 0:
                raise UnreadableImageError(file, "empty file (0 bytes)")
            with Image.open(file, formats=FORMATS) as opened:
                if size is not None and opened.format in ("JPEG", "MPO"):
                    # Both sides >= the larger target side, so a 90-degree EXIF rotation is still safe.
                    side = max(int(size[0]), int(size[1]))
                    opened.draft("RGB", (side, side))
                opened.load()
                rgb = _to_rgb(_exif_transposed(opened, file))
                if rgb is opened:  # never hand out the image tied to the (closing) file
                    rgb = rgb.copy()
        except UnreadableImageError:
            raise
        except Exception as exc:
            # PIL's many decoders raise a zoo of types on corrupt input (OSError, SyntaxError,
            # ValueError, EOFError, struct.error, IndexError...); to the caller they all mean
            # "this file cannot be used", which is what a training loop needs to know.
            raise UnreadableImageError(file, _describe(exc, file)) from exc
    for item in caught:
        logger.debug("%s: %s", file, item.message)
    return rgb


def _exif_transposed(image: Image.Image, file: Path) -> Image.Image:
    try:
        transposed = ImageOps.exif_transpose(image)
    except Exception as exc:  # a broken EXIF block should not cost the (fine) pixels
        logger.debug("%s: ignoring unreadable EXIF orientation (%s)", file, exc)
        return image
    return image if transposed is None else transposed


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        gray = _scale_to_uint8(np.asarray(image), float_input=mode == "F")
        return Image.fromarray(gray).convert("RGB")  # "L" inferred from the uint8 array
    if "A" in mode or "a" in mode or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _scale_to_uint8(values: np.ndarray[Any, Any], *, float_input: bool) -> np.ndarray[Any, Any]:
    """Map a one-channel numeric image to 0..255 without clipping its range away."""
    data = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo = float(data.min()) if data.size else 0.0
    hi = float(data.max()) if data.size else 0.0
    if float_input and lo >= 0.0 and hi <= 1.0:
        scaled = data * 255.0
    elif float_input and lo >= 0.0 and hi <= 255.0:
        scaled = data
    elif not float_input and lo >= 0.0 and hi <= 65535.0:
        scaled = data * (255.0 / 65535.0)  # 16-bit: 65535 -> 255, 32768 -> 128
    else:  # values outside any known convention (int32 or float data): stretch what is there
        scaled = (data - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(data)
    result: np.ndarray[Any, Any] = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return result


def check_image(path: str | os.PathLike[str]) -> str | None:
    """Cheaply test that ``path`` looks like a complete image; return why not, or None if fine.

    Reads the header with PIL and runs ``Image.verify()`` (which checks PNG chunk checksums but
    decodes no pixels). JPEG's ``verify()`` checks nothing, so for JPEG the file is also searched for
    the end-of-image marker after the start of the compressed data: a cut-off download lacks it.
    Truncation of other formats (GIF, BMP, WebP, TIFF) is only found when decoding, where the
    dataset skips the file.
    """
    file = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            if file.stat().st_size == 0:
                return "empty file (0 bytes)"
            with Image.open(file, formats=FORMATS) as image:
                fmt = image.format
                start = image.tile[0][2] if image.tile else None
                image.verify()
            if fmt in ("JPEG", "MPO") and start is not None and not _has_jpeg_end(file, int(start)):
                return "truncated JPEG (no end-of-image marker after the image data)"
        except Exception as exc:  # same zoo of decoder exceptions as in load_image
            return _describe(exc, file)
    return None


def _has_jpeg_end(file: Path, start: int, chunk: int = 1 << 20) -> bool:
    # 0xFFD9 cannot occur inside entropy-coded data (0xFF bytes are stuffed as FF00), so finding it
    # after the first scan starts means the data was not cut off; searching from `start` rather than
    # looking only at the last bytes keeps files with trailers (motion photos, MPO) valid.
    with file.open("rb") as fh:
        fh.seek(start)
        previous = b""
        while block := fh.read(chunk):
            if b"\xff\xd9" in previous[-1:] + block:
                return True
            previous = block
    return False
