"""SSRF-safe fetching of image URLs, and one entry point for every kind of image source.

The host is resolved once per hop, every address is checked, and the socket is opened to the
checked address itself, so a DNS answer that changes between check and connect cannot steer
the request inside the network. Redirects are followed by hand and re-checked completely.
Every URL, the first and each redirect, is parsed by ``inference.urls.split_image_url``,
the parser the API validates ``image_url`` with.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypedDict
from urllib.parse import urljoin

from PIL import Image

from inference.addresses import AddressPolicy
from inference.errors import (
    FetchDnsError,
    FetchError,
    FetchTimeoutError,
    ImageTooLargeError,
    TooManyRedirectsError,
    UpstreamStatusError,
)
from inference.images import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    decode_image,
    read_image_file,
)
from inference.retry import RetryPolicy
from inference.urls import UrlParts, split_image_url

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_REDIRECTS = 3

Resolver = Callable[[str, int], list[str]]
ImageSource = bytes | bytearray | memoryview | str | os.PathLike[str]


class _DecodeLimits(TypedDict):
    max_bytes: int
    max_pixels: int
    max_side: int
    draft_size: tuple[int, int] | None
    draft_long_side: int | None


_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
# identity: nothing is ever inflated here, so max_bytes counts exactly the bytes decoded later.
_HEADERS = {
    "Accept": "image/jpeg, image/png, image/webp",
    "Accept-Encoding": "identity",
    "Connection": "close",
    "User-Agent": "Vigil-image-fetch/1",
}


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to for TCP, in resolver order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _checked_addresses(target: UrlParts, resolver: Resolver, policy: AddressPolicy) -> list[str]:
    try:
        addresses = [str(ipaddress.ip_address(target.host))]
    except ValueError:
        try:
            addresses = resolver(target.host, target.port)
        except OSError as exc:
            raise FetchDnsError(f"Could not resolve {target.host}: {exc}") from exc
    if not addresses:
        raise FetchError(f"{target.host} has no address.")
    for address in addresses:  # one private answer is enough to refuse the whole name
        policy.check(target.host, address)
    return addresses


class _Deadline:
    """One time budget shared by every hop of a fetch."""

    def __init__(self, timeout_s: float) -> None:
        self.end = time.monotonic() + timeout_s

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise FetchTimeoutError()
        return left

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.end


class _Watchdog:
    """Shuts the socket down at the deadline, waking any blocked read.

    Socket timeouts bound each call; this bounds their sum, e.g. headers sent a byte at a time.
    """

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self.sock = sock
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        # The plain-socket call skips SSLSocket's unwrap; a closed socket just raises OSError.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def _connect(target: UrlParts, addresses: list[str], deadline: _Deadline) -> socket.socket:
    error: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((address, target.port), deadline.remaining())
        except OSError as exc:
            error = exc
    assert error is not None
    raise error


def _read_capped(
    resp: http.client.HTTPResponse, sock: socket.socket, max_bytes: int, deadline: _Deadline
) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        sock.settimeout(deadline.remaining())
        chunk = resp.read1(_CHUNK)  # one recv at most, so the deadline is checked often
        if not chunk:
            break
        size += len(chunk)
        if size > max_bytes:
            raise ImageTooLargeError(f"The image body exceeds {max_bytes} bytes.")
        chunks.append(chunk)
    if deadline.passed:  # the watchdog's shutdown looks like a normal end of body
        raise FetchTimeoutError()
    if resp.length:  # http.client counts down Content-Length; leftovers mean a cut body
        raise FetchError("The connection closed before the whole image arrived.")
    return b"".join(chunks)


def _request(
    target: UrlParts,
    addresses: list[str],
    policy: AddressPolicy,
    max_bytes: int,
    deadline: _Deadline,
    context: ssl.SSLContext | None,
) -> str | bytes:
    """One hop: the body on success, or the absolute redirect URL."""
    try:
        sock = _connect(target, addresses, deadline)
    except OSError as exc:
        raise _failure(target, exc, deadline) from exc
    watchdog: _Watchdog | None = None
    resp: http.client.HTTPResponse | None = None
    try:
        watchdog = _Watchdog(sock, deadline.remaining())
        policy.check(target.host, sock.getpeername()[0])  # the address actually connected to
        if target.scheme == "https":
            ctx = context or ssl.create_default_context()
            sock = watchdog.sock = ctx.wrap_socket(sock, server_hostname=target.host)
        sock.settimeout(deadline.remaining())
        conn = http.client.HTTPConnection(target.host, target.port)
        conn.sock = sock  # pinned: http.client never resolves the name itself
        conn.putrequest("GET", target.target, skip_host=True, skip_accept_encoding=True)
        for name, value in {"Host": target.host_header, **_HEADERS}.items():
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        if resp.status in _REDIRECTS:
            location = resp.getheader("Location")
            if not location:
                raise FetchError(f"Redirect {resp.status} without a Location header.")
            return urljoin(target.url, location.strip())
        if not 200 <= resp.status < 300:
            raise UpstreamStatusError(resp.status)
        declared = resp.getheader("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise ImageTooLargeError(f"The image is {declared} bytes; at most {max_bytes}.")
        return _read_capped(resp, sock, max_bytes, deadline)
    except (OSError, http.client.HTTPException) as exc:
        raise _failure(target, exc, deadline) from exc
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if resp is not None:
            resp.close()  # its file object holds the socket open past sock.close()
        sock.close()


def _failure(target: UrlParts, exc: Exception, deadline: _Deadline) -> FetchError:
    if deadline.passed or isinstance(exc, TimeoutError):
        return FetchTimeoutError()
    return FetchError(f"Fetching {target.host} failed: {exc}")


def fetch_url(
    url: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    resolver: Resolver | None = None,
    allowed_networks: Sequence[str] = (),
    ssl_context: ssl.SSLContext | None = None,
) -> bytes:
    """GET ``url`` and return at most ``max_bytes`` of body, refusing internal addresses.

    ``allowed_networks`` (CIDR strings) lets operators and tests reach chosen private ranges.
    """
    policy = AddressPolicy.from_strings(allowed_networks)
    deadline = _Deadline(timeout_s)
    for _hop in range(max_redirects + 1):
        target = split_image_url(url)
        addresses = _checked_addresses(target, resolver or resolve_host, policy)
        outcome = _request(target, addresses, policy, max_bytes, deadline, ssl_context)
        if isinstance(outcome, bytes):
            return outcome
        url = outcome
    raise TooManyRedirectsError(f"More than {max_redirects} redirects.")


def load_source(
    source: ImageSource,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    resolver: Resolver | None = None,
    allowed_networks: Sequence[str] = (),
    ssl_context: ssl.SSLContext | None = None,
    draft_size: tuple[int, int] | None = None,
    draft_long_side: int | None = None,
    retry: RetryPolicy | None = None,
) -> Image.Image:
    """Decode an image source into an upright RGB image, by its type:

    - ``bytes`` (or bytearray, memoryview): decoded as they are (an upload);
    - ``str`` (``ImageUrl`` or plain): an http(s) URL, fetched; any other string is refused
      with ``UrlSchemeError`` / ``InvalidUrlError``, never read as a file name;
    - ``os.PathLike`` (``pathlib.Path``): a trusted local file, read (the CLI's images).

    With ``retry``, a URL whose fetch fails transiently (``retryable`` errors) is fetched
    again as the policy allows; a final refusal is raised at once.
    """
    caps: _DecodeLimits = {
        "max_bytes": max_bytes,
        "max_pixels": max_pixels,
        "max_side": max_side,
        "draft_size": draft_size,
        "draft_long_side": draft_long_side,
    }
    if isinstance(source, bytes | bytearray | memoryview):
        return decode_image(source, **caps)
    if isinstance(source, os.PathLike):
        return read_image_file(source, **caps)
    if isinstance(source, str):
        url = source  # fetch_url parses it (and each redirect) with split_image_url

        def fetch() -> bytes:
            return fetch_url(
                url,
                max_bytes=max_bytes,
                timeout_s=timeout_s,
                max_redirects=max_redirects,
                resolver=resolver,
                allowed_networks=allowed_networks,
                ssl_context=ssl_context,
            )

        data = retry.call(fetch) if retry is not None else fetch()
        return decode_image(data, **caps)
    raise TypeError(f"Unsupported image source type {type(source).__name__}.")
