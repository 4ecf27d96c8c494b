"""E-mail: messages composed and sent off the request path, over SMTP with TLS.

``Mailer.later(compose)`` answers at once; ``compose`` (which may read and write the
database) and the sending run in a task of this process, bounded by
``PRISM_SMTP_TIMEOUT_SECONDS``, so what a message says (a password reset token) is never
written anywhere on its way: not in a job payload, not in a table. A failure is logged
without the message's content.

Where a message goes is ``PRISM_SMTP_URL``: ``smtps://`` (TLS from the first byte),
``smtp://`` (STARTTLS, refused if the server does not offer it) or ``smtp+insecure://`` (a
relay on this machine). Certificates are always checked, against ``PRISM_SMTP_CA_FILE`` when
it is set. Unset, a development server writes each message to the log (so a developer can
follow a reset link) and a production server writes only that mail is not configured.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

import aiosmtplib
import structlog

from prism.config import Settings, SmtpEndpoint, smtp_endpoint

log = structlog.get_logger("prism.mail")

# Messages composed or being sent at once by one process; more are dropped (and logged):
# the callers are throttled, so only a flood from many sources gets here.
MAX_PENDING = 200


@dataclass(frozen=True)
class Message:
    to: str
    subject: str
    text: str


Compose = Callable[[], Awaitable[Message | None]]


class Mailer:
    """Sends ``Message``s over SMTP, or logs them when no server is configured."""

    def __init__(self, settings: Settings) -> None:
        self.sender = settings.mail_from
        self.timeout = settings.smtp_timeout_seconds
        self.development = not settings.production
        self.endpoint: SmtpEndpoint | None = (
            smtp_endpoint(settings.smtp_url.get_secret_value()) if settings.smtp_url else None
        )
        self._tls: ssl.SSLContext | None = None
        if self.endpoint is not None and self.endpoint.security != "none":
            ca_file = str(settings.smtp_ca_file) if settings.smtp_ca_file else None
            self._tls = ssl.create_default_context(cafile=ca_file)
        self._pending: set[asyncio.Task[None]] = set()
        self.sent = 0

    @property
    def configured(self) -> bool:
        return self.endpoint is not None

    def later(self, compose: Compose, *, what: str) -> bool:
        """Compose and send a message in the background; False when too many are pending
        (the message is dropped and logged). ``compose`` returning None sends nothing."""
        if len(self._pending) >= MAX_PENDING:
            log.error("mail dropped: too many messages pending", what=what, pending=MAX_PENDING)
            return False
        task = asyncio.create_task(self._compose_and_send(compose, what))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return True

    async def _compose_and_send(self, compose: Compose, what: str) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                message = await compose()
                if message is not None:
                    await self.send(message)
        except TimeoutError:
            log.error("mail given up: it took too long", what=what, seconds=self.timeout)
        except Exception as exc:  # noqa: BLE001 - a background task has nobody to raise to
            # The error's class and SMTP code only: its text may name the recipient, and the
            # message may hold a secret.
            log.error(
                "mail not sent",
                what=what,
                error=type(exc).__name__,
                smtp_code=getattr(exc, "code", None),
            )

    async def send(self, message: Message) -> None:
        """Send now (raises on failure)."""
        email = self._email(message)
        endpoint = self.endpoint
        if endpoint is None:
            if self.development:
                log.warning(
                    "mail is not configured (PRISM_SMTP_URL); development mode logs the message",
                    to=message.to,
                    subject=message.subject,
                    text=message.text,
                )
            else:
                log.warning(
                    "mail is not configured (PRISM_SMTP_URL): a message was not sent",
                    subject=message.subject,
                )
            return
        await aiosmtplib.send(
            email,
            hostname=endpoint.host,
            port=endpoint.port,
            username=endpoint.username,
            password=endpoint.password,
            use_tls=endpoint.security == "tls",
            start_tls=endpoint.security == "starttls",
            tls_context=self._tls,
            timeout=self.timeout,
        )
        self.sent += 1

    def _email(self, message: Message) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = message.to
        email["Subject"] = message.subject
        email["Date"] = formatdate(usegmt=True)
        domain = parseaddr(self.sender)[1].rpartition("@")[2] or None
        email["Message-ID"] = make_msgid(domain=domain)
        # RFC 3834: an automatic message; auto-responders should not answer it.
        email["Auto-Submitted"] = "auto-generated"
        email.set_content(message.text)
        return email

    async def idle(self) -> None:
        """Wait until every message handed to ``later`` so far is sent or given up."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def close(self) -> None:
        """Let pending messages finish (each is bounded by the timeout)."""
        await self.idle()
