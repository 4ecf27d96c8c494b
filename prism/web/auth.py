"""Who is calling over HTTP, and what a refusal costs them.

``Authorization: Bearer <JWT | prism_pat_…>`` is authenticated once per request by
Starlette's authentication middleware (``BearerAuthentication``); the principal rides in the
scope as ``PrincipalUser``. A refusal (a bearer that does not authenticate, a malformed
request) is charged to the caller's rate-limit bucket like any other; a caller who cannot pay
for one more is answered 429 RATE_LIMITED."""

from __future__ import annotations

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from prism.authn.bearer import authenticate_bearer
from prism.authz.principal import Principal
from prism.errors import Unauthenticated
from prism.execution.limits import (
    CHARGED,
    Refusal,
    caller_key,
    charge_refusal,
    rate_limited,
)
from prism.services import Services


class PrincipalUser(BaseUser):
    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return str(self.principal.user_id or self.principal.api_token_id)


class BearerAuthentication(AuthenticationBackend):
    """Who is calling: ``Authorization: Bearer <JWT | prism_pat_…>``; none means anonymous
    (only sign-in, refresh, sign-out and the password reset mutations then work)."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        header = conn.headers.get("authorization")
        if not header or conn.scope.get("path") == "/metrics":
            # /metrics has its own bearer (PRISM_METRICS_TOKEN), checked by its route.
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationError("Use `Authorization: Bearer <token>`.")
        services: Services = conn.app.state.services
        try:
            principal = await authenticate_bearer(
                services.db, services.access_tokens, value.strip(), services.credentials
            )
        except Unauthenticated as exc:
            raise AuthenticationError(exc.message) from exc
        return AuthCredentials(sorted(principal.granted_scopes)), PrincipalUser(principal)


class Authentication(AuthenticationMiddleware):
    """Starlette's authentication middleware, which leaves a request authenticated in front
    of it (by the lean path, ``prism.web.lean``) as it is: a credential is checked once."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if "user" in scope:
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def bearer_of(conn: HTTPConnection) -> str | None:
    """The credential of an `Authorization: Bearer` header (already authenticated)."""
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


def unauthenticated(conn: HTTPConnection, exc: Exception) -> Response:
    return ChargedRefusal(
        {
            "data": None,
            "errors": [{"message": str(exc), "extensions": {"code": "UNAUTHENTICATED"}}],
        },
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def rate_limited_response(refusal: Refusal) -> JSONResponse:
    """429 RATE_LIMITED, with when to retry, for a caller who cannot pay for a refusal."""
    bucket, rate = refusal.bucket, refusal.rate
    error = rate_limited(refusal.charge, bucket)
    return JSONResponse(
        {"data": None, "errors": [error.formatted]},
        status_code=429,
        headers={
            "Retry-After": str(bucket.retry_after),
            "RateLimit-Limit": str(rate.capacity),
            "RateLimit-Remaining": str(bucket.remaining),
            "RateLimit-Reset": str(bucket.reset),
        },
    )


def caller_of(scope: Scope) -> str:
    """The rate-limit bucket of an HTTP request's caller, before any context exists."""
    user = scope.get("user")
    principal = user.principal if isinstance(user, PrincipalUser) else None
    client = scope.get("client")
    return caller_key(principal, client[0] if client else None)


async def charged(scope: Scope, response: Response) -> Response:
    """``response`` (a refusal) once the caller has paid for it; 429 when it cannot. Not
    charged twice: a refusal the GraphQL layer charged is marked in the scope's state."""
    state = scope.setdefault("state", {})
    if state.get(CHARGED):
        return response
    state[CHARGED] = True
    services: Services = scope["app"].state.services
    found = await charge_refusal(services, caller_of(scope))
    if found is not None and not found.bucket.allowed:
        return rate_limited_response(found)
    return response


class ChargedRefusal(JSONResponse):
    """A refusal answered by middleware (a bearer token that does not authenticate):
    charged to the source address like any other refusal."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await charged(scope, self) if "app" in scope else self
        if response is self:
            await super().__call__(scope, receive, send)
        else:
            await response(scope, receive, send)
