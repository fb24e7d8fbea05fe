"""Outbound HTTP from streams, behind a guard against server-side request forgery.

A stream author chooses the URL a node calls, and the call runs inside Tally's network,
so without a guard a stream could read the cloud metadata service, the database's admin
port or anything else only Tally can reach. The guard works on addresses, not names:

1. The URL must be http or https, without credentials in it.
2. The host is resolved once (getaddrinfo) and the resolved addresses are checked against
   `TALLY["STREAMS"]["HTTP_ALLOWED_HOSTS"]`:
   - empty (the default): every address the name resolves to must be public; loopback,
     private, link-local, multicast, reserved, unspecified and shared (CGNAT) addresses
     are refused, as are IPv6 addresses that embed one (IPv4-mapped, 6to4, Teredo);
   - containing "*": any host, any address (for deployments that call internal APIs);
   - otherwise: only the host names listed, exactly, which may resolve anywhere.
3. The connection goes to the address that was checked, never to a second lookup of the
   name: a name that answers a public address to the check and 127.0.0.1 to the connect
   (DNS rebinding) cannot slip through. The request still carries the name in its Host
   header, and TLS still sends it as SNI and verifies the certificate against it, so
   virtual hosting and certificate checks behave as if the name had been connected to.
4. Redirects are followed by hand, a few hops at most, and every hop goes through the
   guard again; the Authorization header is dropped when a hop leaves the original host.
5. Every request has a deadline, and a response body larger than MAX_RESPONSE_BYTES is
   refused rather than buffered.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3
from django.conf import settings
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError, SSLError, TimeoutError

MAX_RESPONSE_BYTES = 1024 * 1024
MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES = 64 * 1024
ALLOW_SETTING = "TALLY_HTTP_ALLOWED_HOSTS"


class OutboundRefused(Exception):
    """The guard refused the destination; nothing was sent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutboundFailed(Exception):
    """The request was attempted and did not produce a usable response. `retryable` is
    True for failures a later attempt may not meet (timeouts, refused connections)."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True)
class OutboundResponse:
    """A response read in full: header names in lower case, the URL of the last hop."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    url: str


# --- The guard ------------------------------------------------------------------------


def address_problem(address: str) -> str | None:
    """Why `address` is not a public one ("a loopback address"), or None when it is."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv6 address that carries an IPv4 one reaches that IPv4 host.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            problem = address_problem(str(embedded))
            return f"{problem} ({embedded}, carried in IPv6)" if problem else None
    # Checked most specific first: 127.0.0.1 is both loopback and private.
    for is_kind, kind in (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_reserved, "a reserved address"),  # 240.0.0.0/4 counts as private too
        (ip.is_private, "a private address"),
    ):
        if is_kind:
            return kind
    if not ip.is_global:  # e.g. 100.64.0.0/10, shared by carrier-grade NAT
        return "not a public address"
    return None


def destination_check(host: str, port: int, *, allowed_hosts: Iterable[str]) -> str:
    """The address to connect to for `host`, after checking it against the allow list.
    Raises OutboundRefused with a reason a stream author can act on."""
    allowed = {name.strip().lower().rstrip(".") for name in allowed_hosts if name.strip()}
    name = host.lower().rstrip(".")
    if allowed and "*" not in allowed and name not in allowed:
        raise OutboundRefused(f"{host} is not in {ALLOW_SETTING}")
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OutboundRefused(f"{host} cannot be resolved ({exc})") from None
    addresses = list(dict.fromkeys(info[4][0] for info in found))
    if not addresses:
        raise OutboundRefused(f"{host} cannot be resolved")
    if not allowed:
        # All of them, not just the first: the connection must not be able to fall back
        # to an address that was never acceptable.
        for address in addresses:
            problem = address_problem(address)
            if problem is None:
                continue
            if address == name:
                raise OutboundRefused(f"{address} is {problem}; allow it with {ALLOW_SETTING}")
            raise OutboundRefused(
                f"{host} resolves to {address}, {problem}; allow the host with {ALLOW_SETTING}"
            )
    return addresses[0]


# --- The client -----------------------------------------------------------------------


def send(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    on_request: Callable[[], None] | None = None,
    allowed_hosts: Iterable[str] | None = None,
    timeout: float | None = None,
) -> OutboundResponse:
    """Send one request through the guard, following redirects hop by hop.

    `on_request` is called before every request that passes the guard (each redirect hop
    is one), so callers can count what actually went out. Raises OutboundRefused (nothing
    sent for that hop) or OutboundFailed (timeout, connection or TLS failure, too large).
    """
    streams = settings.TALLY["STREAMS"]
    if allowed_hosts is None:
        allowed_hosts = streams["HTTP_ALLOWED_HOSTS"]
    allowed_hosts = list(allowed_hosts)
    if timeout is None:
        timeout = float(streams["HTTP_TIMEOUT_SECONDS"])
    headers = dict(headers or {})
    first_host = _split(url)[1]
    for _hop in range(MAX_REDIRECTS + 1):
        scheme, host, port, target = _split(url)
        address = destination_check(host, port, allowed_hosts=allowed_hosts)
        if on_request is not None:
            on_request()
        response = _send_once(
            method, scheme, host, port, target, address, headers, body, url, timeout
        )
        location = response.headers.get("location")
        if response.status not in _REDIRECT_STATUSES or not location:
            return response
        url = urljoin(url, location)
        if response.status == 303 or (response.status in (301, 302) and method == "POST"):
            # What browsers and every client do: the follow-up is a GET without the body.
            method = "GET" if method != "HEAD" else method
            body = None
            headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        if _split(url)[1].lower() != first_host.lower():
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    raise OutboundFailed(f"more than {MAX_REDIRECTS} redirects", retryable=False)


def _split(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query) of an absolute http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise OutboundRefused(f"{url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise OutboundRefused(f"{url!r} is not an http or https URL")
    if not parts.hostname:
        raise OutboundRefused(f"{url!r} names no host")
    if parts.username is not None or parts.password is not None:
        raise OutboundRefused("credentials in the URL are not supported")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port, target


def _send_once(
    method: str,
    scheme: str,
    host: str,
    port: int,
    target: str,
    address: str,
    headers: dict[str, str],
    body: bytes | None,
    url: str,
    timeout: float,
) -> OutboundResponse:
    deadline = time.monotonic() + timeout
    pool_options = {
        "port": port,
        "timeout": urllib3.Timeout(connect=timeout, read=timeout),
        "retries": False,  # retries are the caller's decision, per its params
        "maxsize": 1,
    }
    if scheme == "https":
        # Connect to the checked address, but speak TLS to the name: SNI and the
        # certificate check both use `host`.
        pool = urllib3.HTTPSConnectionPool(
            address,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            assert_hostname=host,
            server_hostname=host,
            **pool_options,
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, **pool_options)
    default_port = 443 if scheme == "https" else 80
    shown_host = f"[{host}]" if ":" in host else host
    request_headers = {
        "Host": shown_host if port == default_port else f"{shown_host}:{port}",
        "User-Agent": "Tally-Streams/1",
        # Compressed bodies could expand past the size cap before it is checked.
        "Accept-Encoding": "identity",
        **headers,
    }
    try:
        with pool:
            raw = pool.urlopen(
                method,
                target,
                body=body,
                headers=request_headers,
                redirect=False,
                retries=False,
                preload_content=False,
                assert_same_host=False,
            )
            try:
                content = _read_capped(raw, deadline, timeout)
            finally:
                raw.release_conn()
    except NewConnectionError as exc:  # a subclass of TimeoutError, for history's sake
        raise OutboundFailed(f"connection failed: {_short(exc)}", retryable=True) from None
    except TimeoutError:
        raise OutboundFailed(f"timed out after {timeout:g} s", retryable=True) from None
    except SSLError as exc:
        raise OutboundFailed(f"TLS failed: {exc}", retryable=False) from None
    except (Urllib3Error, OSError) as exc:
        raise OutboundFailed(f"connection failed: {_short(exc)}", retryable=True) from None
    return OutboundResponse(
        status=raw.status,
        reason=raw.reason or "",
        headers={name.lower(): value for name, value in raw.headers.items()},
        body=content,
        url=url,
    )


def _read_capped(raw: urllib3.BaseHTTPResponse, deadline: float, timeout: float) -> bytes:
    declared = raw.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise OutboundFailed(_too_large(), retryable=False)
    chunks: list[bytes] = []
    size = 0
    while True:
        # The socket timeout bounds each read; this bounds the whole body, so a server
        # dripping one byte at a time cannot hold the batch for longer.
        if time.monotonic() > deadline:
            raise OutboundFailed(f"timed out after {timeout:g} s", retryable=True)
        chunk = raw.read(_CHUNK_BYTES)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise OutboundFailed(_too_large(), retryable=False)
        chunks.append(chunk)


def _too_large() -> str:
    return f"the response is larger than {MAX_RESPONSE_BYTES // 1024} KB"


def _short(exc: BaseException) -> str:
    # urllib3 wraps the OS error several levels deep; its innermost words are the useful ones.
    while exc.__context__ is not None and isinstance(exc, Urllib3Error):
        exc = exc.__context__
    return str(exc).split(": ", 1)[-1][:200] or type(exc).__name__
