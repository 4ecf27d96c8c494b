"""What a webhook may reach, and the one way a delivery is sent (against SSRF).

A URL is checked when it is registered and again before every attempt: https (http only with
PRISM_WEBHOOK_ALLOW_HTTP), no credentials, a host that resolves only to public addresses:
no private, loopback, link-local, shared, reserved, multicast, broadcast or unspecified one,
IPv4 or IPv6, including IPv4 addresses inside IPv6 ones (mapped, 6to4, NAT64, Teredo); with
PRISM_WEBHOOK_ALLOW_PRIVATE only multicast, broadcast and unspecified are refused. The
connection is then made to the address that was checked (the request names it, the ``Host``
header and TLS's server name and certificate check name the host), so a DNS answer that
changes between the check and the connection (rebinding) cannot take it elsewhere. Redirects
are never followed (an answer 3xx is a failed attempt); the whole attempt has one deadline;
no more than PRISM_WEBHOOK_MAX_RESPONSE_BYTES of the answer are read; proxies from the
environment are not used.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from prism.config import Settings

MAX_URL_LENGTH = 2048
USER_AGENT = "Prism-Webhooks/1"
CONTENT_TYPE = "application/cloudevents+json"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")


class Refused(Exception):
    """The URL may not be used (the message says why, and is safe to show)."""


@dataclass(frozen=True)
class Target:
    """A URL taken apart, with the checked address the connection goes to."""

    scheme: str
    host: str
    port: int
    path: str
    address: str


def split(url: str, settings: Settings) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query) of an acceptable URL; Refused otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise Refused(f"A webhook URL is at most {MAX_URL_LENGTH} characters.")
    if _UNSAFE.search(url):
        raise Refused("A webhook URL has no spaces or control characters.")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme != "https" and not (scheme == "http" and settings.webhook_allow_http):
        raise Refused("A webhook URL is https://.")
    if parts.username is not None or parts.password is not None:
        raise Refused("A webhook URL carries no credentials (sign with the secret instead).")
    if parts.fragment:
        raise Refused("A webhook URL has no fragment.")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise Refused("A webhook URL names a host.")
    try:
        given = parts.port
    except ValueError as exc:
        raise Refused("A webhook URL's port is a number from 1 to 65535.") from exc
    port = (443 if scheme == "https" else 80) if given is None else given
    if port == 0:
        raise Refused("A webhook URL's port is a number from 1 to 65535.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, host, port, path


def _embedded(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64, Teredo client), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def refusal(ip: IPAddress, *, allow_private: bool) -> str | None:
    """Why a webhook may not connect to ``ip`` (None: it may)."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded(ip)
        if inner is not None:
            return refusal(inner, allow_private=allow_private)
    if ip.is_multicast:
        return "multicast"
    if ip.is_unspecified:
        return "unspecified"
    if ip == _BROADCAST:
        return "broadcast"
    if allow_private:
        return None
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global or any(ip in net for net in _NOT_PUBLIC if net.version == ip.version):
        return "non-public"
    return None


# Ranges this Python's ``is_global`` still calls global but that are not public destinations:
# deprecated IPv6 site-local addresses and the retired 6to4 relay anycast.
_NOT_PUBLIC = (ipaddress.ip_network("fec0::/10"), ipaddress.ip_network("192.88.99.0/24"))


async def resolve(url: str, settings: Settings) -> Target:
    """The URL's target, every address of its host checked; Refused when any is not allowed
    (a host with one public and one private address is refused)."""
    scheme, host, port, path = split(url, settings)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            async with asyncio.timeout(settings.webhook_timeout_seconds):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
        except (OSError, TimeoutError) as exc:
            raise Refused(f"The webhook's host {host} does not resolve.") from exc
        addresses = []
        for info in infos:
            found = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if found not in addresses:
                addresses.append(found)
        if not addresses:
            raise Refused(f"The webhook's host {host} does not resolve.")
    for address in addresses:
        reason = refusal(address, allow_private=settings.webhook_allow_private)
        if reason is not None:
            raise Refused(f"The webhook's host {host} is a {reason} address: refused.")
    return Target(scheme, host, port, path, str(addresses[0]))


@dataclass(frozen=True)
class Outcome:
    status: int | None
    latency_ms: int
    error: str | None
    # How much of the answer was read (at most PRISM_WEBHOOK_MAX_RESPONSE_BYTES).
    read_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


def _netloc(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


async def send(target: Target, headers: dict[str, str], body: bytes, settings: Settings) -> Outcome:
    """POST ``body`` to the target's checked address; never raises for the network's sake."""
    deadline = settings.webhook_timeout_seconds
    default_port = 443 if target.scheme == "https" else 80
    host = f"[{target.host}]" if ":" in target.host else target.host
    sent = {
        **headers,
        "host": host if target.port == default_port else f"{host}:{target.port}",
        "content-type": CONTENT_TYPE,
        "user-agent": USER_AGENT,
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    url = f"{target.scheme}://{_netloc(target.address, target.port)}{target.path}"
    started = time.perf_counter()
    status: int | None = None
    read = 0
    error: str | None = None
    try:
        async with (
            asyncio.timeout(deadline),
            httpx.AsyncClient(
                follow_redirects=False, trust_env=False, timeout=httpx.Timeout(deadline)
            ) as client,
        ):
            request = client.build_request(
                "POST", url, headers=sent, content=body, extensions=extensions
            )
            response = await client.send(request, stream=True)
            try:
                status = response.status_code
                cap = settings.webhook_max_response_bytes
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= cap:
                        read = min(read, cap)
                        break
            finally:
                await response.aclose()
    except TimeoutError:
        error = f"no answer within {deadline:g} s"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__
    latency_ms = round((time.perf_counter() - started) * 1000)
    if error is None and status is not None and not 200 <= status < 300:
        error = (
            f"HTTP {status} (redirects are not followed)"
            if 300 <= status < 400
            else f"HTTP {status}"
        )
    return Outcome(status=status, latency_ms=latency_ms, error=error, read_bytes=read)
