"""SSRF-safe fetching against real HTTP(S) servers on 127.0.0.1, and load_source on every input."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from inference.errors import (
    BlockedAddressError,
    FetchError,
    FetchTimeoutError,
    ImageTooLargeError,
    InvalidUrlError,
    TooManyRedirectsError,
    UnsupportedImageFormatError,
    UpstreamStatusError,
    UrlSchemeError,
)
from inference.fetch import Resolver, fetch_url, load_source
from inference.retry import RetryPolicy
from inference.urls import ImageUrl, parse_image_url, split_image_url
from vigil.settings import Settings

pytestmark = pytest.mark.integration

PHOTOS = Path(__file__).parent / "data" / "photos"
PHOTO = (PHOTOS / "dog.jpg").read_bytes()
LOCAL = ["127.0.0.1/32"]
REDIRECT_CODES = [301, 302, 303, 307, 308]


class Handler(BaseHTTPRequestHandler):
    """Routes for every upstream behaviour the fetcher must survive."""

    server: OriginServer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        self.server.seen.append((url.path, self.headers.get("Host")))
        route = getattr(self, "route_" + url.path.strip("/").split("/")[0].replace("-", "_"), None)
        if route is None:
            self.send_error(404)
        else:
            route(url.path, query)

    def send_body(self, body: bytes, *, length: bool = True, kind: str = "image/jpeg") -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str, code: int = 302) -> None:
        self.send_response(code)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def route_photo(self, path: str, query: dict[str, str]) -> None:
        self.send_body(PHOTO)

    def route_svg(self, path: str, query: dict[str, str]) -> None:
        self.send_body(b'<svg xmlns="http://www.w3.org/2000/svg"/>', kind="image/svg+xml")

    def route_hop(self, path: str, query: dict[str, str]) -> None:
        prefix, left = path.rsplit("/", 1)
        if left == "0":  # last hop absolute, the others relative
            self.redirect(f"http://127.0.0.1:{self.server.server_port}/photo")
        else:
            code = REDIRECT_CODES[int(left) % len(REDIRECT_CODES)]
            self.redirect(f"{prefix}/{int(left) - 1}", code)

    def route_slowhop(self, path: str, query: dict[str, str]) -> None:
        time.sleep(0.2)
        self.route_hop(path, query)

    def route_to(self, path: str, query: dict[str, str]) -> None:
        self.redirect(query["url"])

    def route_loop(self, path: str, query: dict[str, str]) -> None:
        self.redirect("/loop")

    def route_slow(self, path: str, query: dict[str, str]) -> None:
        self.server.release.wait(5)
        self.send_body(PHOTO)

    def route_drip(self, path: str, query: dict[str, str]) -> None:
        # Every byte arrives well within a per-read timeout; only an overall deadline stops it.
        self.send_response(200)
        self.send_header("Content-Length", "10000")
        self.end_headers()
        self.wfile.flush()
        self.drip(b"\xff" * 10000)

    def route_drip_headers(self, path: str, query: dict[str, str]) -> None:
        self.wfile.write(b"HTTP/1.0 200 OK\r\n")
        self.drip(b"X-Pad: " + b"a" * 1000)

    def drip(self, data: bytes) -> None:
        for i in range(len(data)):
            if self.server.release.wait(0.05):
                return
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()

    def route_big(self, path: str, query: dict[str, str]) -> None:
        self.send_body(PHOTO * 4, length=query.get("length") == "yes")

    def route_flaky(self, path: str, query: dict[str, str]) -> None:
        # /flaky/<key>?fails=N&status=S: the first N requests for <key> answer S.
        self.server.hits[path] += 1
        if self.server.hits[path] <= int(query.get("fails", "2")):
            self.send_error(int(query.get("status", "503")))
        else:
            self.send_body(PHOTO)

    def route_short(self, path: str, query: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(PHOTO)))
        self.end_headers()
        self.wfile.write(PHOTO[:1000])

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest output quiet


class OriginServer(ThreadingHTTPServer):
    """A real HTTP server on 127.0.0.1 that records the path and Host of every request."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[tuple[str, str | None]] = []
        self.hits: Counter[str] = Counter()
        self.release = threading.Event()  # set to end slow handlers when a test is done

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the fetcher hanging up on purpose is not a server failure


def serve(server: OriginServer) -> Iterator[OriginServer]:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def running_origin() -> Iterator[OriginServer]:
    yield from serve(OriginServer())


@pytest.fixture
def origin(running_origin: OriginServer) -> Iterator[OriginServer]:
    running_origin.seen.clear()
    running_origin.hits.clear()
    running_origin.release.clear()
    yield running_origin
    running_origin.release.set()


def resolver_for(table: dict[str, list[str]]) -> Resolver:
    def resolve(host: str, port: int) -> list[str]:
        return table[host]

    return resolve


def test_photo_is_fetched_from_a_server_in_an_allowed_network(origin: OriginServer) -> None:
    assert fetch_url(f"{origin.base}/photo", allowed_networks=LOCAL) == PHOTO
    assert origin.seen == [("/photo", f"127.0.0.1:{origin.server_port}")]


def test_host_header_keeps_the_name_while_the_socket_goes_to_the_checked_address(
    origin: OriginServer,
) -> None:
    url = f"http://camera.test:{origin.server_port}/photo"
    resolve = resolver_for({"camera.test": ["127.0.0.1"]})
    assert fetch_url(url, resolver=resolve, allowed_networks=LOCAL) == PHOTO
    assert origin.seen == [("/photo", f"camera.test:{origin.server_port}")]


def test_name_is_resolved_once_so_a_rebinding_second_answer_is_never_used(
    origin: OriginServer,
) -> None:
    answers = [["127.0.0.1"], ["10.0.0.7"]]

    def rebinding(host: str, port: int) -> list[str]:
        return answers.pop(0)

    url = f"http://camera.test:{origin.server_port}/photo"
    assert fetch_url(url, resolver=rebinding, allowed_networks=LOCAL) == PHOTO
    assert answers == [["10.0.0.7"]]  # the private answer was never asked for


def test_redirect_chain_within_the_limit_is_followed(origin: OriginServer) -> None:
    data = fetch_url(f"{origin.base}/hop/2", max_redirects=3, allowed_networks=LOCAL)
    assert data == PHOTO
    assert [path for path, _ in origin.seen] == ["/hop/2", "/hop/1", "/hop/0", "/photo"]


def test_one_redirect_too_many_is_refused(origin: OriginServer) -> None:
    with pytest.raises(TooManyRedirectsError) as info:
        fetch_url(f"{origin.base}/hop/3", max_redirects=3, allowed_networks=LOCAL)
    assert (info.value.code, info.value.status) == ("fetch_too_many_redirects", 502)
    assert "/photo" not in [path for path, _ in origin.seen]


def test_endless_redirect_loop_stops_after_max_redirects(origin: OriginServer) -> None:
    with pytest.raises(TooManyRedirectsError):
        fetch_url(f"{origin.base}/loop", max_redirects=3, allowed_networks=LOCAL)
    assert len(origin.seen) == 4


@pytest.mark.parametrize(
    "target",
    ["http://10.1.2.3/x", "http://169.254.169.254/latest/meta-data", "http://[::1]/"],
)
def test_redirect_into_a_private_network_is_refused(origin: OriginServer, target: str) -> None:
    with pytest.raises(BlockedAddressError) as info:
        fetch_url(f"{origin.base}/to?url={target}", allowed_networks=LOCAL)
    assert (info.value.code, info.value.status) == ("url_address_blocked", 422)
    assert [path for path, _ in origin.seen] == ["/to"]


def test_redirect_to_a_name_that_resolves_privately_is_refused(origin: OriginServer) -> None:
    resolve = resolver_for({"camera.example.com": ["10.0.0.7"]})
    with pytest.raises(BlockedAddressError):
        fetch_url(
            f"{origin.base}/to?url=http://camera.example.com/snapshot.jpg",
            resolver=resolve,
            allowed_networks=LOCAL,
        )


def test_redirect_to_a_file_url_is_refused_by_scheme(origin: OriginServer) -> None:
    with pytest.raises(UrlSchemeError) as info:
        fetch_url(f"{origin.base}/to?url=file:///etc/passwd", allowed_networks=LOCAL)
    assert info.value.code == "url_scheme_unsupported"


def test_live_loopback_server_is_refused_without_an_allowance(origin: OriginServer) -> None:
    with pytest.raises(BlockedAddressError):
        fetch_url(f"{origin.base}/photo")
    with pytest.raises(BlockedAddressError):
        fetch_url(f"http://[::ffff:127.0.0.1]:{origin.server_port}/photo")
    assert origin.seen == []
    assert fetch_url(f"{origin.base}/photo", allowed_networks=LOCAL) == PHOTO  # it is live


@pytest.mark.unit
@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fd00:ec2::254]/",
        "http://[fe80::1]/",
        "http://[fc00::5]/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://192.168.1.20/snapshot.jpg",
        "https://10.0.0.1/",
    ],
)
def test_internal_address_literals_are_refused_before_connecting(url: str) -> None:
    with pytest.raises(BlockedAddressError) as info:
        fetch_url(url, timeout_s=0.5)
    assert info.value.code == "url_address_blocked"


def test_public_looking_name_resolving_privately_is_refused_before_any_connection(
    origin: OriginServer,
) -> None:
    with pytest.raises(BlockedAddressError):
        fetch_url(
            "http://camera.example.com/snapshot.jpg",
            resolver=resolver_for({"camera.example.com": ["10.0.0.7"]}),
        )
    # One private answer among allowed ones is enough, and nothing is contacted.
    with pytest.raises(BlockedAddressError):
        fetch_url(
            f"http://camera.example.com:{origin.server_port}/photo",
            resolver=resolver_for({"camera.example.com": ["127.0.0.1", "10.0.0.7"]}),
            allowed_networks=LOCAL,
        )
    assert origin.seen == []


@pytest.mark.unit
@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/cam.jpg",
        "data:image/png;base64,iVBORw0KGgo=",
        "gopher://example.com/",
        "//example.com/cam.jpg",
    ],
)
def test_schemes_other_than_http_and_https_are_refused(url: str) -> None:
    with pytest.raises(UrlSchemeError) as info:
        fetch_url(url)
    assert (info.value.code, info.value.status) == ("url_scheme_unsupported", 400)


@pytest.mark.unit
@pytest.mark.parametrize(
    "url",
    [
        "\x01http://127.0.0.1/a.jpg",  # urlsplit strips leading C0 characters
        " http://127.0.0.1/a.jpg",
        "http://127.0.0.1/a.jpg ",
        "http://127.0.0.1/a\tb.jpg",  # urlsplit drops tab, CR and LF anywhere
        "ht\ntp://127.0.0.1/a.jpg",
        "http://127.0.0.1/a\x00.jpg",
        "http://127.0.0.1/a\x7f.jpg",
        "http://127.0.0.1:0/a.jpg",
        "http://127.0.0.1:70000/a.jpg",
        "http://[::1/a.jpg",
        "http:///a.jpg",
        "http://exa mple.com/a.jpg",
    ],
)
def test_urls_urlsplit_would_quietly_repair_are_refused(url: str) -> None:
    with pytest.raises(InvalidUrlError) as info:
        split_image_url(url)
    assert info.value.code == "url_invalid"
    with pytest.raises(InvalidUrlError):
        fetch_url(url, allowed_networks=LOCAL, timeout_s=0.5)


@pytest.mark.unit
def test_the_parser_splits_what_the_fetcher_connects_to() -> None:
    parts = split_image_url("HTTPS://Cam.Example.com:8443/snap shot.jpg?size=large&é=1#top")
    assert (parts.scheme, parts.host, parts.port) == ("https", "cam.example.com", 8443)
    assert parts.target == "/snap%20shot.jpg?size=large&%C3%A9=1"
    assert parts.host_header == "cam.example.com:8443"
    assert split_image_url("http://[2001:db8::1]/").host_header == "[2001:db8::1]"
    assert isinstance(parse_image_url("http://example.com/a.jpg"), ImageUrl)


def test_credentials_in_the_url_are_refused(origin: OriginServer) -> None:
    with pytest.raises(InvalidUrlError) as info:
        fetch_url(
            f"http://admin:secret@127.0.0.1:{origin.server_port}/photo", allowed_networks=LOCAL
        )
    assert info.value.code == "url_invalid"
    assert origin.seen == []


def test_slow_server_hits_the_timeout(origin: OriginServer) -> None:
    started = time.monotonic()
    with pytest.raises(FetchTimeoutError) as info:
        fetch_url(f"{origin.base}/slow", timeout_s=0.3, allowed_networks=LOCAL)
    assert (info.value.code, info.value.status) == ("fetch_timeout", 504)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("route", ["drip", "drip-headers"])
def test_trickling_response_is_cut_at_the_overall_deadline(
    origin: OriginServer, route: str
) -> None:
    started = time.monotonic()
    with pytest.raises(FetchTimeoutError):
        fetch_url(f"{origin.base}/{route}", timeout_s=0.4, allowed_networks=LOCAL)
    assert time.monotonic() - started < 5


def test_deadline_is_shared_by_every_redirect_hop(origin: OriginServer) -> None:
    # Three hops of 0.2 s each: every hop is quick, the chain is not.
    url = f"{origin.base}/slowhop/2"
    with pytest.raises(FetchTimeoutError):
        fetch_url(url, timeout_s=0.45, allowed_networks=LOCAL)
    paths = [path for path, _ in origin.seen]
    assert 2 <= len(paths) <= 3 and "/photo" not in paths  # cut mid-chain, before the photo
    assert fetch_url(url, timeout_s=2, allowed_networks=LOCAL) == PHOTO


@pytest.mark.parametrize("length", ["yes", "no"], ids=["content-length", "streamed"])
def test_body_over_the_cap_is_refused(origin: OriginServer, length: str) -> None:
    with pytest.raises(ImageTooLargeError) as info:
        fetch_url(
            f"{origin.base}/big?length={length}", max_bytes=len(PHOTO), allowed_networks=LOCAL
        )
    assert info.value.status == 413


def test_missing_image_is_a_final_error_carrying_the_upstream_status(
    origin: OriginServer,
) -> None:
    with pytest.raises(UpstreamStatusError) as info:
        fetch_url(f"{origin.base}/missing.jpg", allowed_networks=LOCAL)
    assert (info.value.code, info.value.status) == ("fetch_http_status", 502)
    assert info.value.upstream_status == 404 and not info.value.retryable


def test_body_shorter_than_its_content_length_is_a_fetch_error(origin: OriginServer) -> None:
    with pytest.raises(FetchError) as info:
        fetch_url(f"{origin.base}/short", allowed_networks=LOCAL)
    assert info.value.code == "fetch_failed"


def test_closed_port_is_a_fetch_error() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FetchError) as info:
        fetch_url(f"http://127.0.0.1:{port}/photo", allowed_networks=LOCAL)
    assert info.value.code == "fetch_failed"


def test_load_source_decodes_bytes_paths_and_allowed_urls(origin: OriginServer) -> None:
    expected = (768, 576)
    assert load_source(PHOTO).size == expected
    assert load_source(bytearray(PHOTO)).size == expected
    assert load_source(memoryview(PHOTO)).size == expected
    assert load_source(PHOTOS / "dog.jpg").size == expected
    assert load_source(f"{origin.base}/photo", allowed_networks=LOCAL).size == expected
    assert load_source(ImageUrl(f"{origin.base}/photo"), allowed_networks=LOCAL).size == expected


@pytest.mark.unit
@pytest.mark.parametrize(
    "source",
    [str(PHOTOS / "dog.jpg"), "dog.jpg", "./dog.jpg", "C:\\photos\\dog.jpg", ImageUrl(str(PHOTOS))],
)
def test_load_source_never_reads_a_string_as_a_file(source: str) -> None:
    """Only a ``pathlib.Path`` is a local file; a string is a URL or refused, never opened."""
    with pytest.raises(UrlSchemeError) as info:
        load_source(source)
    assert info.value.code == "url_scheme_unsupported"


def test_load_source_refuses_what_the_fetcher_refuses(origin: OriginServer) -> None:
    with pytest.raises(BlockedAddressError):
        load_source(f"{origin.base}/photo")
    with pytest.raises(UnsupportedImageFormatError):
        load_source(f"{origin.base}/svg", allowed_networks=LOCAL)


@pytest.mark.unit
@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x.jpg", "data:,x"])
def test_load_source_never_reads_a_url_with_another_scheme(url: str) -> None:
    with pytest.raises(UrlSchemeError):
        load_source(url)


# --- HTTPS: the certificate must match the original name, not the pinned address ------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a throwaway certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = (
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
        " -subj /CN=camera.test -addext subjectAltName=DNS:camera.test"
    ).split()
    subprocess.run([*command, "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def tls_origin(certificate: tuple[Path, Path]) -> Iterator[OriginServer]:
    server = OriginServer()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    yield from serve(server)


@pytest.fixture
def trusting(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


def test_https_is_verified_against_the_name_in_the_url(
    tls_origin: OriginServer, trusting: ssl.SSLContext
) -> None:
    url = f"https://camera.test:{tls_origin.server_port}/photo"
    resolve = resolver_for({"camera.test": ["127.0.0.1"]})
    data = fetch_url(url, resolver=resolve, allowed_networks=LOCAL, ssl_context=trusting)
    assert data == PHOTO


def test_https_certificate_for_another_name_is_refused(
    tls_origin: OriginServer, trusting: ssl.SSLContext
) -> None:
    url = f"https://other.test:{tls_origin.server_port}/photo"
    resolve = resolver_for({"other.test": ["127.0.0.1"]})
    with pytest.raises(FetchError, match="certificate"):
        fetch_url(url, resolver=resolve, allowed_networks=LOCAL, ssl_context=trusting)


def test_https_with_an_untrusted_certificate_is_refused(tls_origin: OriginServer) -> None:
    url = f"https://camera.test:{tls_origin.server_port}/photo"
    resolve = resolver_for({"camera.test": ["127.0.0.1"]})
    with pytest.raises(FetchError, match="certificate"):
        fetch_url(url, resolver=resolve, allowed_networks=LOCAL)


# --- Retries: transient failures are tried again, final refusals are not -----------------


def quick_retry(attempts: int = 3, budget_s: float = 30.0) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, base_s=0.01, max_s=0.05, budget_s=budget_s)


@pytest.mark.parametrize("status", [503, 500, 429])
def test_a_flaky_server_is_retried_until_it_serves_the_image(
    origin: OriginServer, status: int
) -> None:
    url = f"{origin.base}/flaky/{status}?fails=2&status={status}"
    image = load_source(url, allowed_networks=LOCAL, retry=quick_retry())
    assert image.size == (768, 576) and origin.hits[f"/flaky/{status}"] == 3


def test_retries_stop_after_the_configured_attempts(origin: OriginServer) -> None:
    with pytest.raises(UpstreamStatusError) as info:
        load_source(
            f"{origin.base}/flaky/many?fails=9", allowed_networks=LOCAL, retry=quick_retry()
        )
    assert info.value.upstream_status == 503 and info.value.attempts == 3
    assert origin.hits["/flaky/many"] == 3


def test_a_dns_failure_is_retried(origin: OriginServer) -> None:
    calls = []

    def flaky_dns(host: str, port: int) -> list[str]:
        calls.append(host)
        if len(calls) == 1:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return ["127.0.0.1"]

    url = f"http://camera.test:{origin.server_port}/photo"
    image = load_source(url, allowed_networks=LOCAL, resolver=flaky_dns, retry=quick_retry())
    assert image.size == (768, 576) and calls == ["camera.test", "camera.test"]


def test_a_dns_failure_that_persists_is_named(origin: OriginServer) -> None:
    def no_dns(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(FetchError) as info:
        load_source("http://camera.test/photo", resolver=no_dns, retry=quick_retry(attempts=2))
    assert info.value.code == "fetch_dns_failed" and info.value.attempts == 2


@pytest.mark.parametrize("route", ["missing.jpg", "flaky/gone?fails=9&status=404"])
def test_a_4xx_fails_at_once_without_a_retry(origin: OriginServer, route: str) -> None:
    with pytest.raises(UpstreamStatusError) as info:
        load_source(f"{origin.base}/{route}", allowed_networks=LOCAL, retry=quick_retry())
    assert info.value.code == "fetch_http_status" and info.value.attempts == 1
    assert len(origin.seen) == 1


def test_a_blocked_address_fails_at_once_without_a_retry(origin: OriginServer) -> None:
    with pytest.raises(BlockedAddressError) as info:
        load_source(f"{origin.base}/photo", retry=quick_retry())  # loopback not allowed
    assert info.value.code == "url_address_blocked" and info.value.attempts == 1
    assert origin.seen == []


def test_no_retry_starts_past_the_budget(origin: OriginServer) -> None:
    waits: list[float] = []
    # Time passes only while waiting.
    policy = RetryPolicy(
        attempts=10,
        base_s=1.0,
        max_s=1.0,
        budget_s=2.5,
        sleep=waits.append,
        clock=lambda: sum(waits),
    )
    with pytest.raises(UpstreamStatusError):
        load_source(f"{origin.base}/flaky/slow?fails=99", allowed_networks=LOCAL, retry=policy)
    # each wait is in [0.5, 1.0]; the waits never add up past the 2.5 s budget
    assert 2 <= len(waits) <= 4 and sum(waits) <= 2.5
    assert all(0.5 <= w <= 1.0 for w in waits)


@pytest.mark.unit
def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    policy = RetryPolicy(base_s=0.5, max_s=4.0)
    for retry, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (9, 4.0)]:
        delays = {policy.delay(retry) for _ in range(50)}
        assert all(cap / 2 <= d <= cap for d in delays) and len(delays) > 1


@pytest.mark.unit
def test_retry_settings_come_from_the_settings_within_half_the_lease() -> None:
    env = {
        "FETCH_ATTEMPTS": "5",
        "FETCH_BACKOFF_BASE_S": "0.2",
        "FETCH_BACKOFF_MAX_S": "2",
        "FETCH_RETRY_BUDGET_S": "900",
        "SCHEDULER_PROCESSING_TIMEOUT_S": "300",
    }
    policy = RetryPolicy.from_settings(Settings.from_environ(env))
    assert (policy.attempts, policy.base_s, policy.max_s, policy.budget_s) == (5, 0.2, 2.0, 150)
    short = RetryPolicy.from_settings(Settings.from_environ({"FETCH_RETRY_BUDGET_S": "20"}))
    assert short.budget_s == 20  # within half the default 300 s lease: kept as set
    with pytest.raises(ValueError, match="FETCH_ATTEMPTS"):
        Settings.from_environ({"FETCH_ATTEMPTS": "many"})
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
