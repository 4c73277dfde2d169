"""The one parser of image URLs: the API checks a client's ``image_url`` with it, and the
fetcher parses every hop with it, so what the API accepts is exactly what gets fetched.

Accepted: ``http://`` or ``https://`` (any letter case), a host that is a DNS name or an IP
literal (``[...]`` for IPv6), an optional port 1-65535, any path and query. Refused: control
characters (U+0000-U+001F, U+007F) anywhere and whitespace at either end, which
``urllib.parse.urlsplit`` would silently strip or drop; credentials (``user@``); port 0.

An image source typed ``ImageUrl`` is always treated as a URL: fetched, or refused with a
named error, never opened as a local file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from inference.errors import InvalidUrlError, UrlSchemeError

SCHEMES = {"http": 80, "https": 443}
# C0 controls and DEL: urlsplit drops tab/CR/LF anywhere and strips the others at the start,
# so a value carrying them would not be the URL that gets fetched.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# DNS names and IP literals only; anything else would end up raw in the Host header.
_HOST_CHARS = re.compile(r"[a-z0-9.\-_:%]+")


class ImageUrl(str):
    """An image source meant as an http(s) URL, never as a local path.

    ``parse_image_url`` makes checked ones; the fetcher checks every one again (and every
    redirect) before it connects, so an ``ImageUrl`` read back from storage is safe too.
    """

    __slots__ = ()


@dataclass(frozen=True)
class UrlParts:
    """A parsed image URL: what the fetcher connects to and asks for."""

    url: str
    scheme: str
    host: str
    port: int
    target: str  # the request target: path and query, %-encoded

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == SCHEMES[self.scheme] else f"{name}:{self.port}"


def split_image_url(value: str) -> UrlParts:
    """``value``'s parts if it is an acceptable image URL; InvalidUrlError or
    UrlSchemeError (both ``ImageSourceError``, hence ``ValueError``) otherwise."""
    if not isinstance(value, str):
        raise InvalidUrlError("The image URL must be a string.")
    if _CONTROL.search(value):
        raise InvalidUrlError("The image URL contains control characters.")
    if value != value.strip():
        raise InvalidUrlError("The image URL starts or ends with whitespace.")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise InvalidUrlError(f"The image URL is malformed: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UrlSchemeError(
            f"Scheme {scheme or '(none)'!r} refused: the image URL must be http:// or https://."
        )
    if "@" in parts.netloc:
        raise InvalidUrlError("Credentials in image URLs are refused.")
    if not parts.hostname or not _HOST_CHARS.fullmatch(parts.hostname):
        raise InvalidUrlError("The image URL has no valid host.")
    if port == 0:
        raise InvalidUrlError("The image URL's port must be 1-65535.")
    # Keep existing %-escapes, encode what a browser would (spaces, non-ASCII).
    target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~")
    if parts.query:
        target += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=?~")
    return UrlParts(value, scheme, parts.hostname, port or SCHEMES[scheme], target)


def parse_image_url(value: str) -> ImageUrl:
    """``value`` as an ``ImageUrl`` if it is acceptable (see the module docstring)."""
    split_image_url(value)
    return value if isinstance(value, ImageUrl) else ImageUrl(value)


# Two or more letters, so a Windows drive letter ("C:") is never mistaken for a URL scheme.
_SCHEME_PREFIX = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]+:")


def command_line_source(argument: str) -> ImageUrl | Path:
    """What an operator's argument names: a URL when it starts with a scheme (then checked
    like any URL when fetched), else a local file."""
    if _SCHEME_PREFIX.match(argument):
        return ImageUrl(argument)
    return Path(argument)
