"""Fetching an `image_url` for a client, only when the server was started with `--allow-urls`.

A server that fetches any URL it is handed lets anyone who can reach it read what only the server
can reach: cloud metadata (http://169.254.169.254/), admin pages on localhost, the LAN. So:

* only `http` and `https`, no user:password@ in the URL, ports 1-65535;
* the host name is resolved here, and *every* address it resolves to must be public
  (`is_public_address`: not private, loopback, link-local, multicast, reserved, unspecified,
  shared/CGNAT, nor IPv6 forms that embed an IPv4 address: mapped, 6to4, NAT64);
* the connection goes to the address that was checked (the name is not resolved a second time, so
  DNS rebinding cannot swap in another address between the check and the connect); TLS still
  verifies the certificate against the host name;
* redirects are followed by hand, at most `max_redirects`, and each hop is checked like the first;
* the body is capped at `max_bytes` (Content-Length checked first, then counted while reading) and
  the whole fetch, redirects included, at `timeout` seconds.

Standard library only (`http.client`, `socket`, `ssl`, `ipaddress`). Nothing here knows about the app.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Union
from urllib.parse import urljoin, urlsplit

from clipforge.serve.errors import ApiError

__all__ = ["UrlPolicy", "CheckedUrl", "is_public_address", "check_url", "fetch_url", "resolve_host"]

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# Globally routable by `is_global`, but they carry or reach other addresses: refuse them too.
_EMBEDDING_NETWORKS = [
    ipaddress.ip_network("2002::/16"),  # 6to4: 2002:7f00:1:: is 127.0.0.1
    ipaddress.ip_network("64:ff9b::/96"),  # NAT64 well-known prefix
    ipaddress.ip_network("64:ff9b:1::/48"),  # NAT64 local-use prefix
    ipaddress.ip_network("192.88.99.0/24"),  # 6to4 relay anycast (deprecated)
]

REDIRECTS = (301, 302, 303, 307, 308)
CHUNK = 65536


def is_public_address(address: Union[str, IPAddress]) -> bool:
    """True for an address on the public internet; False for loopback, private (RFC 1918, ULA),
    link-local (169.254/16, fe80::/10), multicast, reserved, unspecified, CGNAT (100.64/10) and
    IPv6 addresses that embed an IPv4 one (checked as that address, or refused)."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        embedded = ip.ipv4_mapped or _ipv4_compatible(ip)
        if embedded is not None:
            return is_public_address(embedded)
    if any(ip in net for net in _EMBEDDING_NETWORKS if net.version == ip.version):
        return False
    return bool(ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local
                                      or ip.is_private or ip.is_unspecified))


def _ipv4_compatible(ip: ipaddress.IPv6Address) -> Optional[ipaddress.IPv4Address]:
    """::a.b.c.d (deprecated IPv4-compatible form), which some stacks still route as IPv4."""
    value = int(ip)
    if value >> 32 == 0 and value > 1:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return None


def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (IPv4 and IPv6), in the resolver's order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ApiError(400, f"image_url: cannot resolve host {host!r}: {e}", "url_refused") from None
    seen: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0]).split("%")[0]
        if address not in seen:
            seen.append(address)
    return seen


@dataclass
class UrlPolicy:
    """What `fetch_url` may fetch and how much. `allow_address` and `resolve` can be replaced
    (tests point them at a local server; the server itself always uses the defaults)."""

    max_bytes: int = 20 * 1024 * 1024
    timeout: float = 10.0
    max_redirects: int = 3
    allow_address: Callable[[IPAddress], bool] = is_public_address
    resolve: Callable[[str, int], list[str]] = resolve_host
    user_agent: str = "clipforge-serve"
    ssl_context: Optional[ssl.SSLContext] = field(default=None, repr=False)


@dataclass(frozen=True)
class CheckedUrl:
    url: str
    scheme: str
    host: str  # as in the URL (IDNA-encoded), for the Host header and TLS
    port: int
    address: str  # the checked address to connect to
    target: str  # path and query to request


def check_url(url: str, policy: Optional[UrlPolicy] = None) -> CheckedUrl:
    """Parse `url`, resolve its host and refuse it unless every address is allowed; `ApiError` (400) if not."""
    policy = policy or UrlPolicy()

    def refuse(why: str) -> ApiError:
        return ApiError(400, f"image_url {url[:200]!r} refused: {why}", "url_refused")

    if not isinstance(url, str) or not url or len(url) > 4096:
        raise refuse("not a URL of at most 4096 characters")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise refuse("control characters or spaces in the URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise refuse(f"not a valid URL ({e})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise refuse(f"only http and https URLs are fetched, not {scheme or 'a URL without a scheme'}")
    if parts.username is not None or parts.password is not None:
        raise refuse("credentials in the URL are not allowed")
    host = parts.hostname
    if not host:
        raise refuse("no host")
    port = port if port is not None else (443 if scheme == "https" else 80)
    if not 0 < port < 65536:
        raise refuse(f"port {port} is out of range")
    try:
        literal: Optional[IPAddress] = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is None:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise refuse(f"host {host!r} is not a valid host name") from None
        addresses = policy.resolve(host, port)
        if not addresses:
            raise refuse(f"host {host!r} resolves to no address")
    else:
        addresses = [str(literal)]
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if not policy.allow_address(ip):
            where = f"host {host!r} resolves to {address}" if literal is None else f"{address}"
            raise refuse(f"{where}, which is not a public address ({_kind(ip)})")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return CheckedUrl(url, scheme, host, port, addresses[0], target)


def _kind(ip: IPAddress) -> str:
    if isinstance(ip, ipaddress.IPv6Address) and (ip.ipv4_mapped or _ipv4_compatible(ip)):
        return f"embeds IPv4 {ip.ipv4_mapped or _ipv4_compatible(ip)}"
    for name in ("loopback", "link_local", "multicast", "unspecified", "private", "reserved"):
        if getattr(ip, f"is_{name}"):
            return name.replace("_", "-")
    if any(ip in net for net in _EMBEDDING_NETWORKS if net.version == ip.version):
        return "an address that embeds or relays to another"
    return "not globally routable"


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the checked address, whatever the host name would resolve to now."""

    def __init__(self, checked: CheckedUrl, timeout: float) -> None:
        super().__init__(checked.host, checked.port, timeout=timeout)
        self._address = checked.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    def __init__(self, checked: CheckedUrl, timeout: float, context: Optional[ssl.SSLContext]) -> None:
        super().__init__(checked, timeout)
        self._context = context or ssl.create_default_context()

    def connect(self) -> None:
        super().connect()
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)


def fetch_url(url: str, policy: Optional[UrlPolicy] = None) -> bytes:
    """The body of `url` under `policy` (default `UrlPolicy()`, see the module docstring); `ApiError` names any refusal."""
    policy = policy or UrlPolicy()
    deadline = time.monotonic() + policy.timeout

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ApiError(504, f"image_url: fetching took longer than {policy.timeout:g} s", "url_timeout")
        return left

    current = url
    for hop in range(policy.max_redirects + 1):
        checked = check_url(current, policy)
        if checked.scheme == "https":
            conn: http.client.HTTPConnection = _PinnedHTTPSConnection(checked, remaining(), policy.ssl_context)
        else:
            conn = _PinnedHTTPConnection(checked, remaining())
        try:
            host_header = checked.host if checked.port in (80, 443) else f"{checked.host}:{checked.port}"
            if ":" in checked.host and not checked.host.startswith("["):
                host_header = f"[{checked.host}]" + ("" if checked.port in (80, 443) else f":{checked.port}")
            conn.putrequest("GET", checked.target, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", host_header)
            conn.putheader("User-Agent", policy.user_agent)
            conn.putheader("Accept", "image/*")
            conn.endheaders()
            response = conn.getresponse()
            if response.status in REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise ApiError(502, f"image_url: HTTP {response.status} redirect without a Location", "url_fetch_failed")
                current = urljoin(current, location)
                continue
            if response.status != 200:
                raise ApiError(502, f"image_url: the server answered HTTP {response.status} {response.reason}",
                               "url_fetch_failed")
            return _read_capped(response, conn, policy, remaining)
        except ApiError:
            raise
        except socket.timeout:
            raise ApiError(504, f"image_url: fetching took longer than {policy.timeout:g} s", "url_timeout") from None
        except (OSError, http.client.HTTPException, ssl.SSLError) as e:
            raise ApiError(502, f"image_url: cannot fetch {checked.url[:200]!r}: {type(e).__name__}: {e}",
                           "url_fetch_failed") from None
        finally:
            conn.close()
    raise ApiError(400, f"image_url: more than {policy.max_redirects} redirects", "url_refused")


def _read_capped(response: http.client.HTTPResponse, conn: http.client.HTTPConnection, policy: UrlPolicy,
                 remaining: Callable[[], float]) -> bytes:
    too_large = ApiError(413, f"image_url: the image is larger than the {policy.max_bytes}-byte limit", "too_large")
    length = response.getheader("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > policy.max_bytes:
        raise too_large
    body = bytearray()
    while True:
        if conn.sock is not None:
            conn.sock.settimeout(remaining())  # each read waits at most until the deadline
        chunk = response.read1(CHUNK)
        if not chunk:
            break
        body += chunk
        if len(body) > policy.max_bytes:
            raise too_large
        remaining()  # a server dripping bytes still hits the deadline
    return bytes(body)
