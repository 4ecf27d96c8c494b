"""Documents' original files and page previews over HTTP, with the bearer token:

- ``GET /documents/<global id>/original``: the file as uploaded (opened on the fly if
  sealed), streamed, with its content type and a safe ``Content-Disposition: attachment``;
- ``GET /documents/<global id>/pages/<n>/preview``: page ``n`` (from 1) of a PDF or an image
  as a PNG, rendered in a bounded child process.

The same authentication, rate limit (each request costs ``ORIGINAL_COST`` or
``PREVIEW_COST``), deadline and coded errors as ``/graphql``; what a reader may open, and the
audit of every read and refusal, are ``prism.documents.downloads``'. Answers are never
stored by shared caches and never interpreted by browsers as anything but a download."""

from __future__ import annotations

import asyncio
import base64
import unicodedata
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from prism.authz.principal import Principal
from prism.crypto.sealed import SealedObjectError
from prism.db.faults import RETRY_AFTER_SECONDS
from prism.documents import downloads
from prism.documents.downloads import OriginalFile, Unreadable
from prism.errors import NotFound, PrismError
from prism.execution.ids import expect_id
from prism.execution.limits import Refusal, caller_key, rate_of, take
from prism.extraction.extract import ExtractionError
from prism.models.audit import RequestMeta
from prism.services import Services
from prism.web.auth import PrincipalUser, charged, rate_limited_response
from prism.web.guard import coded_response, error_response

log = structlog.get_logger("prism.http")

# What one request takes from the caller's rate-limit bucket (a GraphQL request takes one per
# object it returns): a download moves a whole file, a preview renders a page in a child.
ORIGINAL_COST = 100
PREVIEW_COST = 100
# Previews rendered at once by one API process; more wait (within the request's deadline).
PREVIEW_SLOTS = 2
_STATUS = {
    "UNAUTHENTICATED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "BAD_USER_INPUT": 400,
    "CONFLICT": 409,
    "SERVICE_UNAVAILABLE": 503,
}
# Nothing in an answer runs or loads anything, should a browser ever render one.
SAFE_HEADERS = {
    "Cache-Control": "private, no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Referrer-Policy": "no-referrer",
}


def coded(error: PrismError) -> JSONResponse:
    response = error_response(_STATUS.get(error.code, 500), error.code, error.message)
    response.headers.update(SAFE_HEADERS)
    return response


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """RFC 6266: an ASCII ``filename`` fallback (quoted, nothing that could end the header
    or the quoted string) and the real name in ``filename*`` (RFC 5987, UTF-8)."""
    clean = "".join(ch for ch in filename if unicodedata.category(ch)[0] != "C") or "document"
    ascii_name = unicodedata.normalize("NFKD", clean).encode("ascii", "ignore").decode()
    ascii_name = "".join(ch if ch.isalnum() or ch in " ._-()" else "_" for ch in ascii_name)
    ascii_name = ascii_name.strip(" ")
    if not ascii_name.strip("."):
        ascii_name = "document"
    elif ascii_name.startswith("."):  # only the extension was ASCII
        ascii_name = "document" + ascii_name
    encoded = quote(clean, safe="")
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{encoded}"


def _meta(request: Request) -> RequestMeta:
    return RequestMeta(
        ip_address=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
        request_id=request.scope.get("state", {}).get("request_id"),
    )


async def _charged_caller(request: Request, cost: int) -> Principal | Response:
    """The caller (401 without a bearer token), charged ``cost`` (429 when it cannot pay)."""
    services: Services = request.app.state.services
    user = request.scope.get("user")
    if not isinstance(user, PrincipalUser):
        response = error_response(401, "UNAUTHENTICATED", "Sign in: send a bearer token.")
        response.headers["WWW-Authenticate"] = "Bearer"
        return await charged(request.scope, response)
    principal = user.principal
    rate = rate_of(services)
    client = request.client.host if request.client else None
    bucket = await take(services, caller_key(principal, client), cost, rate)
    if not bucket.allowed:
        return rate_limited_response(Refusal(rate, bucket, cost))
    request.scope.setdefault("state", {})[_LIMIT_STATE] = (rate, bucket)
    return principal


_LIMIT_STATE = "prism.rate_limit"


def _with_limit_headers(request: Request, response: Response) -> Response:
    found = request.scope.get("state", {}).get(_LIMIT_STATE)
    if found is not None:
        rate, bucket = found
        response.headers["RateLimit-Limit"] = str(rate.capacity)
        response.headers["RateLimit-Remaining"] = str(bucket.remaining)
        response.headers["RateLimit-Reset"] = str(bucket.reset)
    return response


async def _open(
    request: Request, cost: int, purpose: str, page: int | None = None
) -> OriginalFile | Response:
    principal = await _charged_caller(request, cost)
    if isinstance(principal, Response):
        return principal
    services: Services = request.app.state.services
    try:
        document_id = expect_id(request.path_params["document"], "Document")
        return await downloads.open_for_reader(
            services, principal, _meta(request), document_id, purpose=purpose, page=page
        )
    except PrismError as exc:
        return _with_limit_headers(request, coded(exc))


async def download_original(request: Request) -> Response:
    """The original file, streamed (never whole in memory)."""
    opened = await _open(request, ORIGINAL_COST, downloads.ORIGINAL)
    if isinstance(opened, Response):
        return opened
    services: Services = request.app.state.services
    chunks = downloads.stream_original(services, opened)
    try:
        first = await anext(chunks, b"")
    except (SealedObjectError, OSError, BotoCoreError, ClientError) as exc:
        await _close(chunks)
        return _with_limit_headers(request, _unreadable(opened.document_id, exc))
    headers = {
        **SAFE_HEADERS,
        # As detected, with no charset appended: a text original is served in its own
        # encoding, whatever it is.
        "Content-Type": opened.mime_type,
        "Content-Disposition": content_disposition(opened.filename),
        "Content-Length": str(opened.size),
        "Repr-Digest": f"sha-256=:{base64.b64encode(bytes.fromhex(opened.sha256)).decode()}:",
    }
    if request.method == "HEAD":
        await _close(chunks)
        return _with_limit_headers(request, Response(status_code=200, headers=headers))

    async def body() -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            async for chunk in chunks:
                yield chunk
        except SealedObjectError:
            # The response has started: cut it short (the client sees fewer bytes than
            # Content-Length), never finish it with altered bytes.
            log.error("stored original failed its check while streaming", key=opened.storage_key)
            raise
        finally:
            await _close(chunks)

    response = StreamingResponse(body(), headers=headers)
    return _with_limit_headers(request, response)


async def page_preview(request: Request) -> Response:
    """Page ``page`` (from 1) of a PDF or an image, as a PNG."""
    given = str(request.path_params["page"])
    if not (given.isascii() and given.isdigit() and len(given) <= 6):
        return coded(NotFound("No such page."))
    page = int(given)
    opened = await _open(request, PREVIEW_COST, downloads.PREVIEW, page)
    if isinstance(opened, Response):
        return opened
    services: Services = request.app.state.services
    try:
        async with _preview_slots(request):
            png = await downloads.render_preview(services, opened, page)
    except PrismError as exc:
        return _with_limit_headers(request, coded(exc))
    except (Unreadable, OSError, BotoCoreError, ClientError) as exc:
        return _with_limit_headers(request, _unreadable(opened.document_id, exc))
    except ExtractionError as exc:  # the file cannot be rendered (damaged, over its limits)
        response = error_response(415, "UNSUPPORTED_MEDIA_TYPE", str(exc))
        response.headers.update(SAFE_HEADERS)
        return _with_limit_headers(request, response)
    name = opened.filename.rsplit(".", 1)[0] + f"-page-{page}.png"
    headers = {**SAFE_HEADERS, "Content-Disposition": content_disposition(name, "inline")}
    return _with_limit_headers(request, Response(png, media_type="image/png", headers=headers))


def _preview_slots(request: Request) -> asyncio.Semaphore:
    state = request.app.state
    slots: asyncio.Semaphore | None = getattr(state, "preview_slots", None)
    if slots is None:
        slots = state.preview_slots = asyncio.Semaphore(PREVIEW_SLOTS)
    return slots


def _unreadable(document_id: uuid.UUID, exc: BaseException) -> Response:
    """The stored file cannot be read back: gone from the store, archived, or altered."""
    if isinstance(exc, FileNotFoundError) or _s3_code(exc) in ("NoSuchKey", "404"):
        response = error_response(404, "NOT_FOUND", "No original is stored for this document.")
    elif _s3_code(exc) == "InvalidObjectState":
        response = error_response(
            409, "CONFLICT", "The original is archived; it can be opened once it is restored."
        )
    elif isinstance(exc, (SealedObjectError, Unreadable)):
        log.error("stored original failed its check", document_id=str(document_id))
        response = error_response(
            500, "INTERNAL", "The stored original fails its integrity check (altered or cut)."
        )
    else:
        log.warning("original unreadable", document_id=str(document_id), error=str(exc))
        response = coded_response(
            503,
            "SERVICE_UNAVAILABLE",
            "The object store is unavailable; try again shortly.",
            retryAfter=RETRY_AFTER_SECONDS,
        )
    response.headers.update(SAFE_HEADERS)
    return response


def _s3_code(exc: BaseException) -> str | None:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code"))
    return None


async def _close(chunks: AsyncIterator[bytes]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()
