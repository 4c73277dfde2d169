"""Safe decoding of untrusted image bytes into RGB pixels.

Every cheap check runs before Pillow decodes anything: the byte count, the format from its
magic bytes, and the dimensions the header declares. Only then are the pixels loaded.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import struct
import warnings
from collections.abc import Iterator

from PIL import Image, ImageOps

from inference.errors import (
    CorruptImageError,
    DecompressionBombError,
    EmptyImageError,
    ImageDimensionsError,
    ImageNotFoundError,
    ImageSourceError,
    ImageTooLargeError,
    UnsupportedImageFormatError,
)

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_SIDE = 12_000

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers carry the image size; C4, C8 and CC are other segments in that range.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}

# Pillow reports malformed input through any of these, depending on the plugin and the damage.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, struct.error)


def sniff_format(data: bytes) -> str:
    """Return the Pillow format name for JPEG, PNG or WebP magic bytes, else refuse."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(_PNG_SIGNATURE):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    raise UnsupportedImageFormatError()


def declared_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """Read width and height from a PNG or JPEG header without Pillow; None when not found.

    Pillow refuses zero-sized images as unidentifiable; reading the header ourselves lets us
    name the real problem. WebP stores size minus one, so it cannot declare zero.
    """
    if fmt == "PNG" and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack_from(">II", data, 16)
    if fmt != "JPEG":
        return None
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
        elif 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            pos += 2
        elif marker in _JPEG_SOF_MARKERS:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return width, height
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def check_dimensions(width: int, height: int, *, max_pixels: int, max_side: int) -> None:
    """Refuse declared sizes that are empty or too big, before any pixel is decoded."""
    if width <= 0 or height <= 0:
        raise ImageDimensionsError(f"The image declares an empty size ({width}x{height}).")
    if width > max_side or height > max_side:
        raise ImageDimensionsError(
            f"The image is {width}x{height}; each side must be at most {max_side} pixels."
        )
    if width * height > max_pixels:
        raise DecompressionBombError(
            f"The image declares {width * height} pixels; at most {max_pixels} are allowed."
        )


# A JPEG ends with its EOI marker; encoders may pad a little after it. Its absence near the
# end is how a cut-off upload shows without decoding a single pixel.
_JPEG_EOI = b"\xff\xd9"
_JPEG_TAIL = 4096


def _checked_header(data: bytes, *, max_bytes: int, max_pixels: int, max_side: int) -> str:
    """The checks before Pillow sees the bytes: size, format by magic, declared dimensions."""
    if not data:
        raise EmptyImageError()
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"The image is {len(data)} bytes; at most {max_bytes} allowed.")
    fmt = sniff_format(data)
    size = declared_size(data, fmt)
    if size is not None:
        check_dimensions(*size, max_pixels=max_pixels, max_side=max_side)
    return fmt


@contextlib.contextmanager
def _refusals(fmt: str) -> Iterator[None]:
    """Pillow's failures as our named refusals. The bomb warning is an error in this block
    only: the process-wide filters and Image.MAX_IMAGE_PIXELS stay untouched (our own pixel
    cap is checked too, so a filter lost under threads is still safe)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except ImageSourceError:
            raise
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise DecompressionBombError() from exc
        except Image.UnidentifiedImageError as exc:
            raise CorruptImageError(f"The {fmt} header cannot be read.") from exc
        except _DECODE_ERRORS as exc:
            raise CorruptImageError(f"The {fmt} image is truncated or corrupt: {exc}") from exc


def probe_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
) -> tuple[str, tuple[int, int]]:
    """Every check ``decode_image`` makes before it decodes, and none of the decoding: the
    format and size, from the header. PNG chunks are walked with their CRCs and a JPEG must
    end with its end marker, so a cut-off upload is refused too. Costs no pixel memory, so
    the API can check uploads however many arrive at once; workers decode them fully."""
    fmt = _checked_header(data, max_bytes=max_bytes, max_pixels=max_pixels, max_side=max_side)
    with _refusals(fmt), Image.open(io.BytesIO(data), formats=[fmt]) as img:
        check_dimensions(*img.size, max_pixels=max_pixels, max_side=max_side)
        size = img.size
        img.verify()  # PNG: every chunk and CRC; no pixel is decoded
    if fmt == "JPEG" and _JPEG_EOI not in data[-_JPEG_TAIL:]:
        raise CorruptImageError("The JPEG image is truncated (no end marker).")
    return fmt, size


def decode_image(
    data: bytes | bytearray | memoryview,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
    draft_size: tuple[int, int] | None = None,
    draft_long_side: int | None = None,
) -> Image.Image:
    """Decode JPEG, PNG or WebP bytes into an upright RGB image, refusing anything unsafe.

    ``draft_size`` lets a JPEG decode at 1/2, 1/4 or 1/8 scale when the caller letterboxes
    into that size (a square, or turned to the frame's orientation, as the lite scorer
    does): far cheaper for camera frames. Both decoded sides stay at least the target's
    shorter side, so the letterbox never has to enlarge the frame. ``draft_long_side``
    instead keeps the decoded frame's longer side at least that long (the deep worker's
    snapshot side), whatever its aspect ratio.
    """
    data = bytes(data)
    fmt = _checked_header(data, max_bytes=max_bytes, max_pixels=max_pixels, max_side=max_side)

    with _refusals(fmt):
        img = Image.open(io.BytesIO(data), formats=[fmt])
        check_dimensions(*img.size, max_pixels=max_pixels, max_side=max_side)
        full_width = img.width
        if draft_long_side is not None and fmt == "JPEG":
            k = draft_long_side / max(img.size)
            if k < 1:  # Pillow picks the largest 1/2, 1/4, 1/8 scale still at least this
                img.draft("RGB", (math.ceil(img.width * k), math.ceil(img.height * k)))
        elif draft_size is not None and fmt == "JPEG":
            # Square request (EXIF rotation may still swap the sides): each side at least
            # the target's shorter one, which is all a letterbox in that orientation needs.
            side = min(draft_size)
            img.draft("RGB", (side, side))
        img.load()
        reduction = full_width / img.width
        ImageOps.exif_transpose(img, in_place=True)  # no copy when already upright
        upright = img if img.mode == "RGB" else img.convert("RGB")
        # Detections are reported in the source's pixels, even from a reduced decode.
        upright.info["source_size"] = (
            round(upright.width * reduction),
            round(upright.height * reduction),
        )
        return upright


def read_image_file(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
    draft_size: tuple[int, int] | None = None,
    draft_long_side: int | None = None,
) -> Image.Image:
    """Read at most ``max_bytes + 1`` bytes from ``path`` and decode them."""
    try:
        with open(path, "rb") as fh:
            # One byte past the cap tells the file is too large without reading it all.
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ImageNotFoundError(
            f"Cannot read image file {os.fspath(path)!r}: {exc.strerror}."
        ) from exc
    return decode_image(
        data,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        max_side=max_side,
        draft_size=draft_size,
        draft_long_side=draft_long_side,
    )


def encode_jpeg(img: Image.Image, quality: int = 90) -> bytes:
    """Encode an image as JPEG bytes (RGB), e.g. to store a snapshot."""
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()
