"""Safe decoding of untrusted image bytes, on the real sample photos and inputs built from them."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageFile, ImageStat

from inference import errors
from inference.errors import (
    CorruptImageError,
    DecompressionBombError,
    EmptyImageError,
    ImageDimensionsError,
    ImageSourceError,
    ImageTooLargeError,
    UnsupportedImageFormatError,
)
from inference.images import decode_image, encode_jpeg, read_image_file

pytestmark = pytest.mark.unit

PHOTOS = Path(__file__).parent / "data" / "photos"
PHOTO_NAMES = ["dog", "person", "horses", "eagle", "giraffe"]


def photo_bytes(name: str) -> bytes:
    return (PHOTOS / f"{name}.jpg").read_bytes()


def encoded(img: Image.Image, fmt: str, **params: object) -> bytes:
    if fmt == "PNG":
        params.setdefault("compress_level", 1)  # the tests need valid PNGs, not small ones
    out = io.BytesIO()
    img.save(out, format=fmt, **params)
    return out.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def one_bit_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG: huge when decoded, a few KB as bytes."""
    rows = bytes((1 + (width + 7) // 8) * height)  # filter byte 0 and zero bits per row
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(rows, 9))
        + png_chunk(b"IEND", b"")
    )


def with_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """The same JPEG with the size in its baseline start-of-frame header rewritten."""
    sof = data.index(b"\xff\xc0")
    patched = bytearray(data)
    struct.pack_into(">HH", patched, sof + 5, height, width)
    return bytes(patched)


@pytest.fixture(scope="session")
def bomb_png() -> bytes:
    return one_bit_png(12_000, 12_000)  # 144 megapixels at 1 bit each


@pytest.fixture(scope="session")
def dog() -> Image.Image:
    return Image.open(PHOTOS / "dog.jpg").convert("RGB")


@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_every_sample_photo_decodes_to_an_rgb_image_of_its_own_size(name: str) -> None:
    data = photo_bytes(name)
    img = decode_image(data)
    assert img.mode == "RGB"
    assert img.size == Image.open(io.BytesIO(data)).size


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_png_and_webp_are_accepted_alongside_jpeg(dog: Image.Image, fmt: str) -> None:
    img = decode_image(encoded(dog, fmt))
    assert (img.mode, img.size) == ("RGB", dog.size)


def test_transparent_png_comes_out_as_plain_rgb(dog: Image.Image) -> None:
    rgba = dog.convert("RGBA")
    rgba.putalpha(128)
    assert decode_image(encoded(rgba, "PNG")).mode == "RGB"


def test_bytearray_and_memoryview_decode_like_bytes() -> None:
    data = photo_bytes("eagle")
    assert decode_image(bytearray(data)).size == decode_image(memoryview(data)).size == (773, 512)


def test_empty_bytes_are_refused_as_empty() -> None:
    with pytest.raises(EmptyImageError) as info:
        decode_image(b"")
    assert (info.value.code, info.value.status) == ("image_empty", 400)


def test_bytes_over_the_cap_are_refused_as_too_large() -> None:
    data = photo_bytes("dog")
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(data, max_bytes=len(data) - 1)
    assert (info.value.code, info.value.status) == ("image_too_large", 413)
    assert decode_image(data, max_bytes=len(data)).size == (768, 576)


@pytest.mark.parametrize("kind", ["svg", "gif", "bmp", "tiff", "text"])
def test_anything_but_jpeg_png_and_webp_is_refused_as_unsupported(
    dog: Image.Image, kind: str
) -> None:
    small = dog.resize((64, 48))
    data = {
        "svg": lambda: (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" '
            b'width="10" height="10"><rect width="10" height="10"/></svg>'
        ),
        "gif": lambda: encoded(small, "GIF"),
        "bmp": lambda: encoded(small, "BMP"),
        "tiff": lambda: encoded(small, "TIFF"),
        "text": lambda: b"this is not an image at all\n",
    }[kind]()
    with pytest.raises(UnsupportedImageFormatError) as info:
        decode_image(data)
    assert (info.value.code, info.value.status) == ("image_format_unsupported", 415)


@pytest.mark.parametrize("keep", [0.5, 0.1, 0.01])
def test_truncated_jpeg_is_refused_as_corrupt(keep: float) -> None:
    data = photo_bytes("dog")
    with pytest.raises(CorruptImageError) as info:
        decode_image(data[: int(len(data) * keep)])
    assert (info.value.code, info.value.status) == ("image_corrupt", 400)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png_is_refused_as_corrupt(dog: Image.Image) -> None:
    data = encoded(dog, "PNG")
    with pytest.raises(CorruptImageError):
        decode_image(data[: len(data) // 2])


def test_jpeg_magic_followed_by_garbage_is_refused_as_corrupt() -> None:
    with pytest.raises(CorruptImageError):
        decode_image(b"\xff\xd8\xff" + b"\x00garbage" * 100)


def test_jpeg_declaring_a_side_over_the_limit_is_refused_before_decoding() -> None:
    data = with_jpeg_size(photo_bytes("dog"), 13_000, 576)
    with pytest.raises(ImageDimensionsError) as info:
        decode_image(data)
    assert (info.value.code, info.value.status) == ("image_dimensions_invalid", 422)


def test_png_declaring_a_side_over_a_custom_limit_is_refused() -> None:
    with pytest.raises(ImageDimensionsError):
        decode_image(one_bit_png(2_000, 10), max_side=1_000)


@pytest.mark.parametrize(
    "data",
    [
        with_jpeg_size(photo_bytes("dog"), 768, 0),
        with_jpeg_size(photo_bytes("dog"), 0, 576),
        one_bit_png(0, 10),
    ],
    ids=["jpeg-zero-height", "jpeg-zero-width", "png-zero-width"],
)
def test_zero_width_or_height_is_refused_as_bad_dimensions(data: bytes) -> None:
    with pytest.raises(ImageDimensionsError, match="empty size"):
        decode_image(data)


def test_decompression_bomb_is_refused_although_it_is_only_kilobytes(bomb_png: bytes) -> None:
    assert len(bomb_png) < 64 * 1024
    with pytest.raises(DecompressionBombError) as info:
        decode_image(bomb_png)
    assert (info.value.code, info.value.status) == ("image_decompression_bomb", 413)


def test_pixel_cap_applies_to_images_within_the_side_limit(dog: Image.Image) -> None:
    with pytest.raises(DecompressionBombError):
        decode_image(encoded(dog, "PNG"), max_pixels=768 * 576 - 1)


def test_pillow_bomb_warning_becomes_our_error_even_when_warnings_are_ignored() -> None:
    # 100 megapixels: over Pillow's warning limit but under our generous caps for this call.
    data = one_bit_png(10_000, 10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DecompressionBombError):
            decode_image(data, max_pixels=200_000_000, max_side=20_000)


def test_decoding_leaves_global_warning_filters_and_pillow_limits_alone(bomb_png: bytes) -> None:
    filters_before, limit_before = list(warnings.filters), Image.MAX_IMAGE_PIXELS
    decode_image(photo_bytes("horses"))
    with pytest.raises(DecompressionBombError):
        decode_image(bomb_png)
    assert warnings.filters == filters_before
    assert Image.MAX_IMAGE_PIXELS == limit_before


def test_exif_orientation_6_is_applied_so_the_picture_comes_out_upright(
    dog: Image.Image,
) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: stored rotated, display turned 90 degrees clockwise
    data = encoded(dog, "JPEG", exif=exif.tobytes(), quality=95)

    img = decode_image(data)

    assert img.size == (576, 768)
    upright = dog.transpose(Image.Transpose.ROTATE_270)
    mean_diff = sum(ImageStat.Stat(ImageChops.difference(img, upright)).mean) / 3
    assert mean_diff < 4  # only JPEG re-encoding noise, not a wrong rotation


def test_read_image_file_decodes_a_real_photo() -> None:
    assert read_image_file(PHOTOS / "giraffe.jpg").size == (500, 500)
    assert read_image_file(str(PHOTOS / "person.jpg")).size == (640, 424)


def test_read_image_file_refuses_a_file_over_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "huge.jpg"
    path.write_bytes(photo_bytes("dog") + bytes(2 * 1024 * 1024))
    with pytest.raises(ImageTooLargeError):
        read_image_file(path, max_bytes=1024 * 1024)


def test_read_image_file_refuses_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(EmptyImageError):
        read_image_file(path)


def test_encode_jpeg_round_trips_through_decode(dog: Image.Image) -> None:
    data = encode_jpeg(dog, quality=80)
    assert data[:3] == b"\xff\xd8\xff"
    assert decode_image(data).size == dog.size


def test_every_refusal_has_its_own_code_and_an_http_error_status() -> None:
    classes = [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, ImageSourceError)
    ]
    codes = [cls.code for cls in classes]
    assert len(classes) >= 12
    assert len(set(codes)) == len(codes)
    assert all(400 <= cls.status < 600 for cls in classes)
    assert ImageTooLargeError("x").to_dict() == {
        "code": "image_too_large",
        "status": 413,
        "message": "x",
    }
