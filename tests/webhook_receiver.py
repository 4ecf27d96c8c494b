"""A real HTTP receiver on loopback for the webhook tests: it records what it is sent and
answers as told (a status per request, a redirect, an endless body, a slow answer); and a
webhook of another organization for the isolation tests."""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prism.models.enums import Classification, WebhookDeliveryStatus
from prism.models.webhooks import WebhookDelivery, WebhookEndpoint
from prism.services import Services
from prism.webhooks.endpoints import ping_event
from tests.factories import Tenant, gid


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    # What the next requests get: a status, or "redirect", "big", "slow".
    script: deque[Any] = field(default_factory=deque)
    default: Any = 200
    big_written: int = 0

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def to(self, path: str = "/hook") -> str:
        return self.url + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_receiver() -> Receiver:
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            receiver = holder["r"]
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            receiver.received.append(
                Received(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time()
                )
            )
            answer = receiver.script.popleft() if receiver.script else receiver.default
            if answer == "redirect":
                self.send_response(302)
                self.send_header("location", receiver.to("/elsewhere"))
                self.send_header("content-length", "0")
                self.end_headers()
            elif answer == "big":
                self.send_response(200)
                self.send_header("content-length", str(50 * 1024 * 1024))
                self.end_headers()
                chunk = b"x" * 65536
                try:
                    for _ in range(800):
                        self.wfile.write(chunk)
                        receiver.big_written += len(chunk)
                except OSError:
                    return
            elif answer == "slow":
                time.sleep(3)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()
            else:
                self.send_response(int(answer))
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = Receiver(server)
    holder["r"] = receiver
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver


async def victim_webhook(services: Services, victim: Tenant) -> tuple[str, str]:
    """A webhook of ``victim`` and one finished delivery of it (written directly: nothing
    is ever sent to it), as global IDs."""
    async with services.db.transaction(victim.org_id) as session:
        endpoint = WebhookEndpoint(
            id=uuid.uuid4(),
            organization_id=victim.org_id,
            url="https://webhook.invalid/hook",
            event_types=["*"],
            description="",
            clearance=Classification.RESTRICTED,
            secret_sealed=b"sealed",
            since_sequence=0,
            enabled=True,
        )
        session.add(endpoint)
        await session.flush()
        now = datetime.now(UTC)
        event_id, body = ping_event(endpoint, now)
        row = WebhookDelivery(
            id=uuid.uuid4(),
            organization_id=victim.org_id,
            endpoint_id=endpoint.id,
            event_id=event_id,
            event_type="prism.webhook.ping",
            body=body,
            attempt=1,
            status=WebhookDeliveryStatus.SUCCEEDED,
            window_start=now,
        )
        session.add(row)
    return gid("Webhook", endpoint.id), gid("WebhookDelivery", row.id)


def start_tls_receiver(directory: Any, name: str) -> tuple[ThreadingHTTPServer, list[str]]:
    """A TLS server on loopback whose certificate (self-signed) names ``name``; it records
    the server name (SNI) each handshake asks for."""
    import datetime as dt
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    names: list[str] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    context.sni_callback = lambda _socket, server_name, _context: names.append(server_name or "")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, names
