"""What the HTTP edge decides before Prism sees a request: who the client is (the one
derivation of the client address: throttling, rate limits and audit events all read it) and
who may read ``/metrics``.

The client address is the TCP peer unless that peer is a configured reverse proxy
(``PRISM_TRUSTED_PROXIES``); then it is the rightmost ``X-Forwarded-For`` hop that is not a
trusted proxy. Everything left of that hop was written by the client and proves nothing."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

# A GraphQL document with its variables: anything bigger is not a query but a flood. The one
# limit of a JSON request body over HTTP and of a message over a WebSocket (``prism serve``
# gives uvicorn the same ``ws_max_size``).
MAX_JSON_BODY = 1024 * 1024


def exceeds_body_limit(text: str) -> bool:
    """Whether a message is longer than ``MAX_JSON_BODY`` bytes of UTF-8 (measured without
    decoding it as JSON; a character is up to four bytes)."""
    if len(text) > MAX_JSON_BODY:
        return True
    return not text.isascii() and len(text.encode("utf-8", "surrogatepass")) > MAX_JSON_BODY


_OPERATION_FIELDS = (
    ("query", str, "a string"),
    ("variables", dict, "an object"),
    ("extensions", dict, "an object"),
    ("operationName", str, "a string"),
)


def operation_request_problem(data: Mapping[str, object]) -> str | None:
    """What is wrong with the shape of one GraphQL request (an HTTP body, a GET's parameters,
    a WebSocket subscribe payload), in the words a client is told; None when nothing is.
    Every transport refuses the same requests with the same message."""
    for field, kind, what in _OPERATION_FIELDS:
        value = data.get(field)
        if value is not None and not isinstance(value, kind):
            return f"The GraphQL operation's `{field}` must be {what} or null, if provided."
    return None


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """Comma-separated addresses or CIDRs (``10.0.0.0/8, ::1``); ValueError names a bad one."""
    networks: list[IPNetwork] = []
    for part in value.split(","):
        item = part.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"not an address or CIDR: {item!r}") from None
    return tuple(networks)


@functools.lru_cache(maxsize=4096)
def _address(value: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket is the IPv4 client.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class TrustedProxies:
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, value: str) -> TrustedProxies:
        return cls(parse_networks(value))

    def trusts(self, address: IPAddress) -> bool:
        return any(address.version == net.version and address in net for net in self.networks)

    def client_address(self, peer: str | None, forwarded_for: Sequence[str]) -> str | None:
        """The client's address: the peer, or (when the peer is a trusted proxy) the rightmost
        ``X-Forwarded-For`` hop that is not itself trusted. A hop that is not an address ends
        the walk at the last trusted one: nothing left of garbage can be believed."""
        if peer is None:
            return None
        current = _address(peer)
        if current is None or not self.trusts(current):
            return str(current) if current is not None else peer
        hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                break
            current = address
            if not self.trusts(address):
                break
        return str(current)


class ClientAddressMiddleware:
    """Puts the derived client address in ``scope["client"]``, so ``request.client`` means
    the same thing everywhere (GraphQL context, export downloads, WebSockets)."""

    def __init__(self, app: ASGIApp, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            peer = scope.get("client")
            forwarded = [
                value.decode("latin-1")
                for name, value in scope.get("headers") or []
                if name == b"x-forwarded-for"
            ]
            host = self.proxies.client_address(peer[0] if peer else None, forwarded)
            if host is not None and peer is not None and host != peer[0]:
                scope = {**scope, "client": (host, 0)}
        await self.app(scope, receive, send)


# --- /metrics ---------------------------------------------------------------------------------


def token_digest_of(value: str) -> bytes:
    """``PRISM_METRICS_TOKEN`` is the token, or ``sha256:<64 hex>``: its digest, so that the
    configuration need not hold the secret a scraper sends."""
    if value.startswith("sha256:"):
        digest = bytes.fromhex(value.removeprefix("sha256:"))
        if len(digest) != 32:
            raise ValueError("sha256: needs 64 hex characters")
        return digest
    return hashlib.sha256(value.encode()).digest()


@dataclass(frozen=True)
class MetricsGate:
    """Who may read ``/metrics`` on the public port: bearers of the token when one is set;
    otherwise anyone in development and nobody in production (or when a separate metrics
    listener is configured), where the route answers 404 as if it did not exist."""

    digest: bytes | None
    open: bool

    def decide(self, authorization: str | None) -> int:
        """200 (serve), 401 (a token is needed) or 404 (not served here)."""
        if self.digest is None:
            return 200 if self.open else 404
        scheme, _, value = (authorization or "").partition(" ")
        given = hashlib.sha256(value.strip().encode()).digest()
        # compare_digest on fixed-length digests: the time says nothing about the token.
        if scheme.lower() == "bearer" and hmac.compare_digest(given, self.digest):
            return 200
        return 401


def split_host_port(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening socket; SO_REUSEPORT lets each worker process of `prism serve` bind it (a
    scrape then reads one process, as on the public port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(64)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serve_alone(app: ASGIApp, sockets: Iterable[socket.socket]) -> AsyncIterator[None]:
    """Serve ``app`` on ``sockets`` inside the running event loop (a second, small uvicorn
    server that leaves signal handling to the main one) for the duration of the block."""
    import uvicorn

    listeners = list(sockets)
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False)
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=listeners)
    loop = asyncio.create_task(server.main_loop())
    try:
        yield
    finally:
        server.should_exit = True
        await loop
        await server.shutdown(sockets=listeners)
        for sock in listeners:
            sock.close()
