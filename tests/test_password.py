"""Password change and reset, with e-mail through a real SMTP server (aiosmtpd) run here:
the reset flow end to end over HTTP, tokens single-use and short-lived, unknown addresses
indistinguishable, sessions ended at once, throttling in buckets of its own, audit events
without secrets; the mailer over STARTTLS and TLS with a certificate authority made here."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import hashlib
import ipaddress
import json
import re
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message as EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import SecretStr, ValidationError

from prism.config import Settings
from prism.mail import Mailer, Message
from prism.models.audit import AuditEvent
from prism.models.enums import Role
from prism.models.users import PasswordReset
from prism.services import Services
from tests.conftest import app_with, client_of
from tests.factories import PASSWORD, Tenant, codes, gql

LOGIN = """mutation($email: String!, $password: String!) {
  login(input: {email: $email, password: $password}) { accessToken refreshToken } }"""
REFRESH = "mutation($t: String!) { refreshSession(refreshToken: $t) { accessToken refreshToken } }"
REQUEST = "mutation($email: String!) { requestPasswordReset(email: $email) }"
RESET = """mutation($token: String!, $password: String!) {
  resetPassword(input: {token: $token, newPassword: $password}) }"""
CHANGE = """mutation($current: String!, $new: String!) {
  changePassword(input: {currentPassword: $current, newPassword: $new}) }"""
VIEWER = "{ viewer { scopes } }"
NEW_PASSWORD = "a brand new passphrase"
TOKEN = re.compile(r"prism_reset_[A-Za-z0-9_-]{43}")
INVALID = "The password reset token is invalid, expired or already used."


def _ip() -> str:
    """A source of its own for each use (198.18.0.0/15 is for tests): never the shared
    203.0.113.7, so nothing here throttles another test."""
    n = uuid.uuid4().int
    return f"198.{18 + n % 2}.{(n >> 8) % 256}.{(n >> 16) % 254 + 1}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- a real SMTP server ----------------------------------------------------------------------


@dataclass
class Received:
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    login: bytes | None

    @property
    def text(self) -> str:
        body = self.message.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
        assert body is not None
        content: str = body.get_content()
        return content.replace("\r\n", "\n")  # as sent: SMTP lines end in CRLF


@dataclass
class Inbox:
    """An aiosmtpd handler keeping what it accepts; ``gate`` cleared holds every DATA."""

    messages: list[Received] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.gate.set()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.to_thread(self.gate.wait)
        parsed = email.message_from_bytes(envelope.original_content, policy=default_policy)
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        tls = session.ssl is not None
        self.messages.append(Received(list(envelope.rcpt_tos), parsed, tls, login))
        return "250 OK"

    def to(self, address: str) -> list[Received]:
        return [m for m in self.messages if address.lower() in (r.lower() for r in m.rcpt_tos)]

    async def wait_for(self, address: str, count: int = 1) -> list[Received]:
        """At least ``count`` messages to ``address`` (filled by the server's thread)."""
        async with asyncio.timeout(15):
            while len(self.to(address)) < count:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        return self.to(address)


def _authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"prism",
        b"s3cret pass",
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


@contextmanager
def smtp_server(inbox: Inbox, **kwargs: Any) -> Iterator[int]:
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@dataclass(frozen=True)
class Certificates:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A certificate authority of this test run, and a certificate it signed for 127.0.0.1."""
    folder = tmp_path_factory.mktemp("smtp-tls")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Prism test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    paths.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


# --- the app, sending through the server -----------------------------------------------------


@dataclass
class MailApp:
    app: Any
    inbox: Inbox

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    def client(self, ip: str | None = None) -> httpx.AsyncClient:
        return client_of(self.app, ip or _ip())


@pytest.fixture(scope="module")
async def mail_app(settings: Settings, database_url: str) -> AsyncIterator[MailApp]:
    """The app with its mail going to an SMTP server on this machine."""
    inbox = Inbox()
    with smtp_server(inbox) as port:
        configured = settings.model_copy(
            update={
                "smtp_url": SecretStr(f"smtp+insecure://127.0.0.1:{port}"),
                "mail_from": "Prism <prism@prism.test>",
            }
        )
        async with app_with(configured, database_url) as application:
            yield MailApp(application, inbox)


async def _login(client: httpx.AsyncClient, email: str, password: str) -> dict[str, Any]:
    return await gql(client, LOGIN, {"email": email, "password": password})


async def _session(client: httpx.AsyncClient, email: str, password: str) -> dict[str, str]:
    body = await _login(client, email, password)
    assert body.get("errors") is None, body
    signed_in: dict[str, str] = body["data"]["login"]
    return signed_in


async def _works(client: httpx.AsyncClient, access_token: str) -> bool:
    response = await client.post(
        "/graphql", json={"query": VIEWER}, headers={"authorization": f"Bearer {access_token}"}
    )
    if response.status_code == 401:
        return False
    body = response.json()
    assert body.get("errors") is None, body
    return True


async def _refreshes(client: httpx.AsyncClient, refresh_token: str) -> bool:
    body = await gql(client, REFRESH, {"t": refresh_token})
    return body.get("errors") is None


async def _events(services: Services, tenant: Tenant, event_type: str) -> list[AuditEvent]:
    async with services.db.transaction(tenant.org_id) as session:
        rows = await session.scalars(
            sa.select(AuditEvent)
            .where(AuditEvent.organization_id == tenant.org_id, AuditEvent.event_type == event_type)
            .order_by(AuditEvent.created_at)
        )
        return list(rows)


def _event_text(event: AuditEvent) -> str:
    return json.dumps([event.description, event.before, event.after, event.user_agent], default=str)


async def _request_token(mail: MailApp, address: str, count: int = 1) -> str:
    async with mail.client() as client:
        body = await gql(client, REQUEST, {"email": address})
    assert body.get("errors") is None, body
    assert body["data"] == {"requestPasswordReset": True}
    received = await mail.inbox.wait_for(address, count)
    found = TOKEN.findall(received[-1].text)
    assert found, received[-1].text
    return str(found[0])


# --- the reset flow --------------------------------------------------------------------------


async def test_reset_by_email_end_to_end(mail_app: MailApp, tenant: Tenant) -> None:
    address = tenant.email(Role.REVIEWER)
    async with mail_app.client() as elsewhere:
        first = await _session(elsewhere, address, PASSWORD)
        second = await _session(elsewhere, address, PASSWORD)
        assert await _works(elsewhere, first["accessToken"])

    token = await _request_token(mail_app, address)
    mail = mail_app.inbox.to(address)[0]
    assert mail.message["From"] == "Prism <prism@prism.test>"
    assert mail.message["To"] == address
    assert mail.message["Subject"] == "Reset your Prism password"
    assert mail.message["Auto-Submitted"] == "auto-generated"
    assert "resetPassword" in mail.text
    assert "30 minutes" in mail.text

    # the token is stored as its digest only, nowhere in the clear (no job carries it)
    async with mail_app.services.db.transaction(tenant.org_id) as session:
        stored = (await session.scalars(sa.select(PasswordReset))).all()
        everything = await session.scalar(
            sa.text(
                "SELECT concat((SELECT json_agg(r)::text FROM password_resets r),"
                " (SELECT json_agg(j)::text FROM jobs j),"
                " (SELECT json_agg(a)::text FROM audit_logs a))"
            )
        )
    assert [row.token_hash for row in stored] == [hashlib.sha256(token.encode()).digest()]
    assert token not in (everything or "")
    assert token.removeprefix("prism_reset_") not in (everything or "")

    async with mail_app.client() as client:
        body = await gql(client, RESET, {"token": token, "password": NEW_PASSWORD})
        assert body.get("errors") is None, body
        assert body["data"]["resetPassword"] is True
        # every session ended at once: access and refresh tokens
        for signed_in in (first, second):
            assert not await _works(client, signed_in["accessToken"])
            assert not await _refreshes(client, signed_in["refreshToken"])
        # and the user's API token is revoked (whoever knew the old password may have made it)
        assert not await _works(client, tenant.tokens[Role.REVIEWER])
        # the new password signs in, the old one does not
        assert codes(await _login(client, address, PASSWORD)) == ["UNAUTHENTICATED"]
        assert (await _login(client, address, NEW_PASSWORD)).get("errors") is None
        # the token worked once
        again = await gql(client, RESET, {"token": token, "password": "yet another passphrase"})
        assert codes(again) == ["UNAUTHENTICATED"]
        assert again["errors"][0]["message"] == INVALID

    requested = await _events(mail_app.services, tenant, "auth.password_reset_requested")
    reset = await _events(mail_app.services, tenant, "auth.password_reset")
    assert len(requested) == len(reset) == 1
    assert requested[0].resource_id == reset[0].resource_id == tenant.users[Role.REVIEWER].id
    assert requested[0].actor_id is None
    assert reset[0].actor_id == tenant.users[Role.REVIEWER].id
    assert reset[0].after == {"sessionsEnded": 2, "apiTokensRevoked": 1}
    for event in (*requested, *reset):
        text = _event_text(event)
        assert token not in text
        assert NEW_PASSWORD not in text
        assert PASSWORD not in text
        assert event.ip_address is not None


async def test_an_unknown_address_gets_the_same_answer_and_no_mail(
    mail_app: MailApp, tenant: Tenant
) -> None:
    known = tenant.email(Role.VIEWER)
    unknown = f"nobody-{uuid.uuid4().hex[:8]}@{tenant.domain}"
    answers = []
    for address in (unknown, known, f"nobody@elsewhere-{uuid.uuid4().hex[:6]}.test"):
        async with mail_app.client() as client:
            response = await client.post(
                "/graphql", json={"query": REQUEST, "variables": {"email": address}}
            )
        answers.append((response.status_code, response.content))
    assert answers[0] == answers[1] == answers[2]
    await mail_app.services.mail.idle()
    assert len(mail_app.inbox.to(known)) == 1
    assert mail_app.inbox.to(unknown) == []
    # audit rows only for the address that exists
    requested = await _events(mail_app.services, tenant, "auth.password_reset_requested")
    assert [e.resource_id for e in requested] == [tenant.users[Role.VIEWER].id]


async def test_the_answer_does_not_wait_for_the_mail(mail_app: MailApp, tenant: Tenant) -> None:
    """The known address's answer comes while its e-mail is still held at the server: the
    lookup and the sending happen after the answer, so both answers take the same path."""
    address = tenant.email(Role.APPROVER)
    mail_app.inbox.gate.clear()
    try:
        async with mail_app.client() as client:
            body = await asyncio.wait_for(gql(client, REQUEST, {"email": address}), timeout=10)
        assert body["data"]["requestPasswordReset"] is True
        await asyncio.sleep(0.3)
        assert mail_app.inbox.to(address) == []
    finally:
        mail_app.inbox.gate.set()
    await mail_app.inbox.wait_for(address)


async def test_known_and_unknown_addresses_are_answered_in_the_same_time(
    mail_app: MailApp, tenant: Tenant
) -> None:
    """Interleaved, each from a source of its own, each after the last one's e-mail is out
    (so a send never slows the next answer): the medians agree."""

    async def timed(address: str) -> float:
        await mail_app.services.mail.idle()
        async with mail_app.client() as client:
            started = time.perf_counter()
            body = await gql(client, REQUEST, {"email": address})
            elapsed = time.perf_counter() - started
        assert body["data"] == {"requestPasswordReset": True}
        return elapsed

    known: list[float] = []
    unknown: list[float] = []
    for _ in range(2):  # each address twice: within its throttle (3 an hour)
        for role in Role:
            known.append(await timed(tenant.email(role)))
            unknown.append(await timed(f"ghost-{uuid.uuid4().hex[:6]}@{tenant.domain}"))
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.5 < ratio < 2, (known, unknown)
    await mail_app.services.mail.idle()
    assert all(len(mail_app.inbox.to(tenant.email(role))) == 2 for role in Role)


async def test_an_expired_token_is_refused_like_an_unknown_one(
    mail_app: MailApp, tenant: Tenant
) -> None:
    address = tenant.email(Role.AUDITOR)
    token = await _request_token(mail_app, address)
    async with mail_app.services.db.transaction(tenant.org_id) as session:
        await session.execute(
            sa.update(PasswordReset).values(expires_at=sa.func.now() - dt.timedelta(seconds=1))
        )
    async with mail_app.client() as client:
        expired = await gql(client, RESET, {"token": token, "password": NEW_PASSWORD})
        unknown = await gql(
            client, RESET, {"token": "prism_reset_" + "A" * 43, "password": NEW_PASSWORD}
        )
        assert codes(expired) == codes(unknown) == ["UNAUTHENTICATED"]
        assert expired["errors"][0]["message"] == unknown["errors"][0]["message"] == INVALID
        assert (await _login(client, address, PASSWORD)).get("errors") is None


async def test_using_one_token_voids_the_others(mail_app: MailApp, tenant: Tenant) -> None:
    address = tenant.email(Role.ADMIN)
    older = await _request_token(mail_app, address, 1)
    newer = await _request_token(mail_app, address, 2)
    assert older != newer
    async with mail_app.client() as client:
        assert (await gql(client, RESET, {"token": newer, "password": NEW_PASSWORD})).get(
            "errors"
        ) is None
        refused = await gql(client, RESET, {"token": older, "password": "an attacker's choice"})
        assert codes(refused) == ["UNAUTHENTICATED"]
        assert (await _login(client, address, NEW_PASSWORD)).get("errors") is None


async def test_the_reset_link_follows_the_configured_template(
    settings: Settings, database_url: str, tenant: Tenant
) -> None:
    inbox = Inbox()
    with smtp_server(inbox) as port:
        configured = settings.model_copy(
            update={
                "smtp_url": SecretStr(f"smtp+insecure://localhost:{port}"),
                "password_reset_url": "https://app.example.test/reset?token={token}",
                "password_reset_minutes": 10,
            }
        )
        async with app_with(configured, database_url) as application:
            mail = MailApp(application, inbox)
            token = await _request_token(mail, tenant.email(Role.VIEWER))
    text = inbox.messages[0].text
    assert f"https://app.example.test/reset?token={token}" in text
    assert "10 minutes" in text
    assert "resetPassword" not in text


async def test_an_erased_user_keeps_no_reset_token(mail_app: MailApp, tenant: Tenant) -> None:
    viewer = tenant.users[Role.VIEWER]
    token = await _request_token(mail_app, viewer.email)
    async with mail_app.client() as client:
        admin = await _session(client, tenant.email(Role.ADMIN), PASSWORD)
        erased = await gql(
            client,
            "mutation($id: ID!) { eraseUser(userId: $id) { erasedAt } }",
            {"id": tenant.user_gid(Role.VIEWER)},
            token=admin["accessToken"],
        )
        assert erased.get("errors") is None, erased
        body = await gql(client, RESET, {"token": token, "password": NEW_PASSWORD})
        assert codes(body) == ["UNAUTHENTICATED"]
    async with mail_app.services.db.transaction(tenant.org_id) as session:
        left = await session.scalars(
            sa.select(PasswordReset).where(PasswordReset.user_id == viewer.id)
        )
        assert left.all() == []


# --- throttling --------------------------------------------------------------------------------


async def test_reset_requests_are_throttled_without_locking_sign_in(
    mail_app: MailApp, tenant: Tenant
) -> None:
    address = tenant.email(Role.APPROVER)
    for _ in range(3):
        async with mail_app.client() as client:
            assert (await gql(client, REQUEST, {"email": address})).get("errors") is None
    source = _ip()
    async with mail_app.client(source) as client:
        response = await client.post(
            "/graphql", json={"query": REQUEST, "variables": {"email": address}}
        )
        body = response.json()
        assert codes(body) == ["RATE_LIMITED"]
        assert "password reset requests" in body["errors"][0]["message"]
        assert int(response.headers["retry-after"]) == body["errors"][0]["extensions"]["retryAfter"]
        # sign-in, from the same source, is a bucket of its own
        assert (await _login(client, address, PASSWORD)).get("errors") is None
    await mail_app.inbox.wait_for(address, 3)


async def test_requests_from_elsewhere_do_not_hold_back_the_owner(
    mail_app: MailApp, tenant: Tenant
) -> None:
    address = tenant.email(Role.AUDITOR)
    home = _ip()
    async with mail_app.client(home) as owner:
        await _session(owner, address, PASSWORD)
    for _ in range(3):
        async with mail_app.client() as stranger:
            assert (await gql(stranger, REQUEST, {"email": address})).get("errors") is None
    async with mail_app.client() as stranger:
        assert codes(await gql(stranger, REQUEST, {"email": address})) == ["RATE_LIMITED"]
    async with mail_app.client(home) as owner:
        assert (await gql(owner, REQUEST, {"email": address})).get("errors") is None
    await mail_app.inbox.wait_for(address, 4)


async def test_one_source_cannot_ask_for_many_addresses(mail_app: MailApp, tenant: Tenant) -> None:
    async with mail_app.client() as client:
        for n in range(20):
            address = f"spray-{n}-{uuid.uuid4().hex[:4]}@{tenant.domain}"
            assert (await gql(client, REQUEST, {"email": address})).get("errors") is None, n
        last = await gql(client, REQUEST, {"email": f"last@{tenant.domain}"})
        assert codes(last) == ["RATE_LIMITED"]


async def test_wrong_reset_tokens_are_throttled_per_source(
    mail_app: MailApp, tenant: Tenant
) -> None:
    address = tenant.email(Role.VIEWER)
    async with mail_app.client() as client:
        for n in range(10):
            wrong = "prism_reset_" + uuid.uuid4().hex + "x" * 11 if n % 2 else "not a token"
            body = await gql(client, RESET, {"token": wrong, "password": NEW_PASSWORD})
            assert codes(body) == ["UNAUTHENTICATED"], n
        body = await gql(client, RESET, {"token": "prism_reset_x", "password": NEW_PASSWORD})
        assert codes(body) == ["RATE_LIMITED"]
        assert "password reset attempts" in body["errors"][0]["message"]
        assert (await _login(client, address, PASSWORD)).get("errors") is None
    # elsewhere, a real token still works
    token = await _request_token(mail_app, address)
    async with mail_app.client() as client:
        body = await gql(client, RESET, {"token": token, "password": NEW_PASSWORD})
        assert body.get("errors") is None, body


async def test_one_request_holds_one_reset_mutation(mail_app: MailApp, tenant: Tenant) -> None:
    address = tenant.email(Role.VIEWER)
    async with mail_app.client() as client:
        body = await gql(
            client,
            "mutation($e: String!) { a: requestPasswordReset(email: $e) "
            "b: requestPasswordReset(email: $e) }",
            {"e": address},
        )
    assert codes(body) == ["GRAPHQL_VALIDATION_FAILED"] or body.get("data") is None
    assert body.get("errors")
    await mail_app.services.mail.idle()
    assert mail_app.inbox.to(address) == []


# --- changing a password ---------------------------------------------------------------------


async def test_change_password_ends_the_other_sessions_at_once(
    mail_app: MailApp, app: Any, tenant: Tenant
) -> None:
    address = tenant.email(Role.REVIEWER)
    elsewhere = client_of(app, _ip())  # another server process on the same database
    async with mail_app.client() as client, elsewhere:
        mine = await _session(client, address, PASSWORD)
        other = await _session(client, address, PASSWORD)
        # the other session's access token is remembered by both processes' caches ...
        for application, http in ((mail_app.app, client), (app, elsewhere)):
            cache = application.state.services.credentials
            assert cache is not None
            assert cache.trusted
            assert await _works(http, other["accessToken"])
            hits = cache.hits
            assert await _works(http, other["accessToken"])
            assert cache.hits == hits + 1

        wrong = await gql(
            client,
            CHANGE,
            {"current": "not my password at all", "new": NEW_PASSWORD},
            token=mine["accessToken"],
        )
        assert codes(wrong) == ["BAD_USER_INPUT"]
        short = await gql(
            client, CHANGE, {"current": PASSWORD, "new": "short"}, token=mine["accessToken"]
        )
        assert codes(short) == ["BAD_USER_INPUT"]
        assert short["errors"][0]["extensions"]["argument"] == "newPassword"
        changed = await gql(
            client, CHANGE, {"current": PASSWORD, "new": NEW_PASSWORD}, token=mine["accessToken"]
        )
        assert changed.get("errors") is None, changed
        assert changed["data"]["changePassword"] is True

        # ... and is refused on the very next request in each; its refresh token too
        assert not await _works(client, other["accessToken"])
        assert not await _works(elsewhere, other["accessToken"])
        assert await _works(elsewhere, mine["accessToken"])
        assert not await _refreshes(client, other["refreshToken"])
        # the caller's own session goes on
        assert await _works(client, mine["accessToken"])
        assert await _refreshes(client, mine["refreshToken"])
        assert codes(await _login(client, address, PASSWORD)) == ["UNAUTHENTICATED"]
        assert (await _login(client, address, NEW_PASSWORD)).get("errors") is None

    events = await _events(mail_app.services, tenant, "auth.password_changed")
    assert len(events) == 1
    assert events[0].actor_id == events[0].resource_id == tenant.users[Role.REVIEWER].id
    assert events[0].after == {"otherSessionsEnded": 1}
    assert NEW_PASSWORD not in _event_text(events[0])
    assert PASSWORD not in _event_text(events[0])


async def test_a_change_voids_outstanding_reset_tokens(mail_app: MailApp, tenant: Tenant) -> None:
    address = tenant.email(Role.AUDITOR)
    token = await _request_token(mail_app, address)
    async with mail_app.client() as client:
        mine = await _session(client, address, PASSWORD)
        changed = await gql(
            client, CHANGE, {"current": PASSWORD, "new": NEW_PASSWORD}, token=mine["accessToken"]
        )
        assert changed.get("errors") is None, changed
        body = await gql(client, RESET, {"token": token, "password": "an attacker's choice"})
        assert codes(body) == ["UNAUTHENTICATED"]


async def test_wrong_current_passwords_count_as_failed_sign_ins(
    mail_app: MailApp, tenant: Tenant
) -> None:
    address = tenant.email(Role.APPROVER)
    async with mail_app.client() as client:
        mine = await _session(client, address, PASSWORD)
        for n in range(5):
            body = await gql(
                client, CHANGE, {"current": f"guess {n} guess", "new": NEW_PASSWORD},
                token=mine["accessToken"],
            )  # fmt: skip
            assert codes(body) == ["BAD_USER_INPUT"], n
        # the sixth waits, even with the right password: and so does sign-in from here
        right = await gql(
            client, CHANGE, {"current": PASSWORD, "new": NEW_PASSWORD}, token=mine["accessToken"]
        )
        assert codes(right) == ["RATE_LIMITED"]
        assert codes(await _login(client, address, PASSWORD)) == ["RATE_LIMITED"]
    assert await _events(mail_app.services, tenant, "auth.password_changed") == []


async def test_api_tokens_cannot_change_a_password(mail_app: MailApp, tenant: Tenant) -> None:
    async with mail_app.client() as client:
        body = await gql(
            client,
            CHANGE,
            {"current": PASSWORD, "new": NEW_PASSWORD},
            token=tenant.tokens[Role.ADMIN],
        )
        assert codes(body) == ["FORBIDDEN"]
        anonymous = await gql(client, CHANGE, {"current": PASSWORD, "new": NEW_PASSWORD})
        assert codes(anonymous) == ["UNAUTHENTICATED"]
        assert (await _login(client, tenant.email(Role.ADMIN), PASSWORD)).get("errors") is None


# --- the mailer: TLS, STARTTLS, and no server ------------------------------------------------


def _mailer(settings: Settings, **update: Any) -> Mailer:
    return Mailer(settings.model_copy(update=update))


LETTER = Message(to="someone@prism.test", subject="Hello", text="A line of text.\n")


async def test_starttls_with_a_private_ca_and_a_login(
    settings: Settings, certificates: Certificates
) -> None:
    inbox = Inbox()
    tls = certificates.server_context()
    kwargs = {"tls_context": tls, "require_starttls": True, "authenticator": _authenticator}
    with smtp_server(inbox, auth_required=True, **kwargs) as port:
        url = f"smtp://prism:s3cret%20pass@127.0.0.1:{port}"
        mailer = _mailer(settings, smtp_url=SecretStr(url), smtp_ca_file=certificates.ca_file)
        await mailer.send(LETTER)
        # without the CA, the certificate is not trusted: nothing is sent
        untrusting = _mailer(settings, smtp_url=SecretStr(url))
        with pytest.raises((ssl.SSLError, aiosmtplib.SMTPException)):
            await untrusting.send(LETTER)
        # a wrong password is refused by the server
        wrong = f"smtp://prism:wrong@127.0.0.1:{port}"
        refused = _mailer(settings, smtp_url=SecretStr(wrong), smtp_ca_file=certificates.ca_file)
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await refused.send(LETTER)
    assert len(inbox.messages) == 1
    received = inbox.messages[0]
    assert received.tls
    assert received.login == b"prism"
    assert received.message["Subject"] == "Hello"
    assert received.text == "A line of text.\n"


async def test_smtp_without_starttls_is_refused(settings: Settings) -> None:
    inbox = Inbox()
    with smtp_server(inbox) as port:
        mailer = _mailer(settings, smtp_url=SecretStr(f"smtp://127.0.0.1:{port}"))
        with pytest.raises(aiosmtplib.SMTPException):
            await mailer.send(LETTER)
    assert inbox.messages == []


async def test_implicit_tls(settings: Settings, certificates: Certificates) -> None:
    inbox = Inbox()
    with smtp_server(inbox, ssl_context=certificates.server_context()) as port:
        mailer = _mailer(
            settings,
            smtp_url=SecretStr(f"smtps://127.0.0.1:{port}"),
            smtp_ca_file=certificates.ca_file,
        )
        await mailer.send(LETTER)
    assert [m.message["To"] for m in inbox.messages] == ["someone@prism.test"]


def _log_of_sends(mode: str, data_dir: Path, smtp_url: str | None = None) -> list[dict[str, Any]]:
    """The JSON log lines of a process that sends one message, and one more in the
    background, both saying ``prism_reset_SECRET``."""
    code = (
        "import asyncio\n"
        "from prism.config import Settings\n"
        "from prism.mail import Mailer, Message\n"
        "from prism.observability import configure_logging\n"
        "settings = Settings()\n"
        "configure_logging(settings.log_level, json=True)\n"
        "letter = Message(to='a@prism.test', subject='Reset', text='token prism_reset_SECRET')\n"
        "async def main():\n"
        "    mailer = Mailer(settings)\n"
        "    try:\n"
        "        await mailer.send(letter)\n"
        "    except Exception as exc:\n"
        "        print('send failed:', type(exc).__name__)\n"
        "    async def compose():\n"
        "        return letter\n"
        "    assert mailer.later(compose, what='test')\n"
        "    await mailer.close()\n"
        "asyncio.run(main())\n"
    )
    env = {"PRISM_MODE": mode, "PRISM_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"}
    if smtp_url:
        env["PRISM_SMTP_URL"] = smtp_url
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]


def test_without_a_server_development_logs_the_message_and_production_does_not(
    tmp_path: Path,
) -> None:
    development = _log_of_sends("development", tmp_path)
    assert len([line for line in development if "prism_reset_SECRET" in line.get("text", "")]) == 2
    production = _log_of_sends("production", tmp_path)
    assert len(production) == 2
    assert all("prism_reset_SECRET" not in json.dumps(line) for line in production)
    assert all("not configured" in line["event"] for line in production)


def test_a_failed_send_is_logged_without_the_message(tmp_path: Path) -> None:
    port = _free_port()  # nobody listens there
    lines = _log_of_sends("production", tmp_path, f"smtp+insecure://127.0.0.1:{port}")
    failures = [line for line in lines if line["event"] == "mail not sent"]
    assert len(failures) == 1
    assert failures[0]["level"] == "error"
    assert all("prism_reset_SECRET" not in json.dumps(line) for line in lines)


@pytest.mark.parametrize(
    "url",
    [
        "smtp+insecure://mail.example.test:25",  # no TLS beyond this machine
        "http://127.0.0.1:25",
        "smtp://",
        "smtps://user:pass@127.0.0.1:99999",
    ],
)
def test_smtp_urls_that_are_refused(url: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(smtp_url=SecretStr(url))
    assert "pass@" not in str(refused.value)


def test_settings_of_reset_links_and_senders() -> None:
    with pytest.raises(ValidationError):
        Settings(password_reset_url="https://app.example.test/reset")
    with pytest.raises(ValidationError):
        Settings(password_reset_url="javascript:{token}")
    with pytest.raises(ValidationError):
        Settings(mail_from="nobody")
    ok = Settings(
        smtp_url=SecretStr("smtp+insecure://[::1]:2525"),
        password_reset_url="https://app.example.test/r#{token}",
        mail_from="Prism <noreply@example.test>",
    )
    assert ok.smtp_url is not None
