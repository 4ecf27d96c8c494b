"""The process-wide clients the API and the workers share, built once at start-up
(``prism.bootstrap.build_services``) and handed to every use case, job and request."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from prism.analysis import Analyzer, Analyzers
from prism.authn.cache import CredentialCache
from prism.authn.secrets import AccessTokens, Passwords, SecretBox
from prism.cache.store import Store
from prism.config import Settings
from prism.crypto.envelope import Envelope
from prism.crypto.links import ExportLinks
from prism.db.engine import Database
from prism.db.notify import Notifications
from prism.events.live import LiveEvents
from prism.extraction.detect import ImageLimits
from prism.extraction.extract import Limits
from prism.extraction.ocr import OcrLimits
from prism.extraction.pages import PageLimits, PreviewLimits
from prism.mail import Mailer
from prism.operations.registry import OperationRegistry
from prism.search import Search
from prism.storage import ObjectStore


@dataclass
class Services:
    settings: Settings
    db: Database
    # Document files, export bundles, lake datasets: a local directory or S3.
    objects: ObjectStore
    # Expendable shared state: cached answers, persisted queries, rate-limit buckets.
    cache: Store
    # Seals RESTRICTED sections, originals and export bundles with organizations' data keys.
    envelope: Envelope
    search: Search
    analyzers: Analyzers
    passwords: Passwords
    access_tokens: AccessTokens
    # Encrypts small secrets (MFA seeds) with the server key.
    secrets: SecretBox
    operations: OperationRegistry
    # Signs and checks the download links of personal-data exports.
    export_links: ExportLinks
    # E-mail (password resets), sent off the request path.
    mail: Mailer
    # Document progress events; None until the server's lifespan starts listening.
    progress: Notifications | None = field(default=None)
    # The outbox fanned out to `events` subscriptions; None until the server's lifespan starts
    # listening.
    live_events: LiveEvents | None = field(default=None)
    # Verified bearer credentials; None until the server's lifespan starts listening (and
    # then every request is checked in the database).
    credentials: CredentialCache | None = field(default=None)

    def analyzer(self, name: str | None = None) -> Analyzer:
        """The configured analyzer, or the one named (BAD_USER_INPUT for an unknown name)."""
        return self.analyzers.get(name)

    @property
    def extraction_limits(self) -> Limits:
        settings = self.settings
        return Limits(
            timeout_seconds=settings.extract_timeout_seconds,
            memory_mb=settings.extract_memory_mb,
            max_pages=settings.max_pages,
            pages=PageLimits(
                max_pixels=settings.max_image_pixels, max_pages=settings.ocr_max_pages
            ),
            ocr=OcrLimits(
                languages=settings.ocr_languages,
                timeout_seconds=settings.ocr_timeout_seconds,
                dpi=settings.ocr_dpi,
            ),
            preview=PreviewLimits(
                width=settings.preview_width,
                max_pages=settings.preview_max_pages,
                max_pixels=settings.max_image_pixels,
            ),
        )

    @property
    def image_limits(self) -> ImageLimits:
        """What an uploaded image may measure (checked from its headers at the door)."""
        return ImageLimits(
            max_pixels=self.settings.max_image_pixels, max_frames=self.settings.ocr_max_pages
        )

    @property
    def refresh_ttl(self) -> timedelta:
        return timedelta(seconds=self.settings.refresh_token_ttl_seconds)

    async def close(self) -> None:
        await self.mail.close()
        await self.search.close()
        await self.cache.close()
        await self.db.dispose()
