"""Refusals raised while turning an untrusted image source into pixels.

Every error carries a stable ``code`` for clients and the HTTP ``status`` the API answers with,
so one handler can render any of them as JSON.
"""

from __future__ import annotations


class ImageSourceError(ValueError):
    """Base for every refused image source (bytes, file or URL)."""

    code = "image_source_invalid"
    status = 400
    message = "The image source was refused."

    def __init__(self, message: str | None = None) -> None:
        self.message = message or type(self).message
        super().__init__(self.message)

    def to_dict(self) -> dict[str, str | int]:
        """The JSON body the API sends for this refusal."""
        return {"code": self.code, "status": self.status, "message": self.message}


class ImageNotFoundError(ImageSourceError):
    code = "image_not_found"
    status = 404
    message = "The image file does not exist or cannot be read."


class EmptyImageError(ImageSourceError):
    code = "image_empty"
    message = "The image is empty (0 bytes)."


class ImageTooLargeError(ImageSourceError):
    code = "image_too_large"
    status = 413
    message = "The image is larger than the allowed number of bytes."


class UnsupportedImageFormatError(ImageSourceError):
    code = "image_format_unsupported"
    status = 415
    message = "Unsupported image format; only JPEG, PNG and WebP are accepted."


class CorruptImageError(ImageSourceError):
    code = "image_corrupt"
    message = "The image is truncated or cannot be decoded."


class ImageDimensionsError(ImageSourceError):
    code = "image_dimensions_invalid"
    status = 422
    message = "The image width or height is zero or larger than allowed."


class DecompressionBombError(ImageSourceError):
    code = "image_decompression_bomb"
    status = 413
    message = "The image declares more pixels than allowed (possible decompression bomb)."


class InvalidUrlError(ImageSourceError):
    code = "url_invalid"
    message = "The image URL is malformed or carries credentials."


class UrlSchemeError(InvalidUrlError):
    code = "url_scheme_unsupported"
    message = "Only http:// and https:// image URLs are accepted."


class BlockedAddressError(ImageSourceError):
    code = "url_address_blocked"
    status = 422
    message = "The image URL points to a private, local or reserved network address."


class FetchError(ImageSourceError):
    """The upstream server could not be reached or did not answer with an image."""

    code = "fetch_failed"
    status = 502
    message = "The image URL could not be fetched."

    def __init__(self, message: str | None = None, *, upstream_status: int | None = None) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status


class TooManyRedirectsError(FetchError):
    code = "fetch_too_many_redirects"
    message = "The image URL redirected too many times."


class FetchTimeoutError(FetchError):
    code = "fetch_timeout"
    status = 504
    message = "Fetching the image URL took too long."
