"""Refusals raised while turning an untrusted image source into pixels.

Every error carries a stable ``code`` for clients and the HTTP ``status`` the API answers with,
so one handler can render any of them as JSON. ``retryable`` tells a worker whether trying
the same source again later may succeed (a DNS hiccup, a busy camera) or never will (a
blocked address, a 404, a bomb).
"""

from __future__ import annotations


class ImageSourceError(ValueError):
    """Base for every refused image source (bytes, file or URL)."""

    code = "image_source_invalid"
    status = 400
    message = "The image source was refused."
    retryable = False
    attempts = 1  # tries made before this error was final (see inference.retry)

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
    """The upstream server could not be reached, or the connection broke mid-answer.

    Transient by nature: the camera's web server may be restarting or busy.
    """

    code = "fetch_failed"
    status = 502
    message = "The image URL could not be fetched."
    retryable = True


class FetchDnsError(FetchError):
    code = "fetch_dns_failed"
    message = "The image URL's host name could not be resolved."


class UpstreamStatusError(FetchError):
    """The image URL answered with an HTTP error status.

    5xx and 429 say "not now" and are retried; any other 4xx says "never" and is final.
    """

    code = "fetch_http_status"
    message = "The image URL answered with an HTTP error."

    def __init__(self, upstream_status: int, message: str | None = None) -> None:
        super().__init__(message or f"The image URL answered HTTP {upstream_status}.")
        self.upstream_status = upstream_status

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.upstream_status == 429 or self.upstream_status >= 500


class TooManyRedirectsError(FetchError):
    code = "fetch_too_many_redirects"
    message = "The image URL redirected too many times."
    retryable = False


class FetchTimeoutError(FetchError):
    code = "fetch_timeout"
    status = 504
    message = "Fetching the image URL took too long."
