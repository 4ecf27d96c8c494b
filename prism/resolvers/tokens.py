"""API tokens: the list the caller may see and the mutations, one use case of
``prism.tokens`` each, in the request's transaction."""

from __future__ import annotations

from datetime import datetime

from prism.execution.context import Context
from prism.execution.ids import expect_id
from prism.models.enums import Classification, Role
from prism.models.users import ApiToken
from prism.tokens import api_tokens


async def read_api_tokens(ctx: Context) -> list[ApiToken]:
    """The caller's own tokens, or all of the organization's for who may read them all."""
    principal = ctx.require_principal()
    async with ctx.transaction.read() as session:
        return await api_tokens.list_api_tokens(session, principal)


async def create_api_token(
    ctx: Context, name: str, scopes: list[str], expires_at: datetime | None
) -> tuple[str, ApiToken]:
    """(the secret, shown once; the token)."""
    principal = ctx.require_principal()
    async with ctx.transaction.write() as session:
        return await api_tokens.create_api_token(
            session, principal, ctx.meta, name=name, scopes=scopes, expires_at=expires_at
        )


async def create_service_token(
    ctx: Context,
    name: str,
    role: Role,
    clearance: Classification,
    department: str | None,
    scopes: list[str],
    expires_at: datetime | None,
) -> tuple[str, ApiToken]:
    """(the secret, shown once; the token)."""
    principal = ctx.require_principal()
    async with ctx.transaction.write() as session:
        return await api_tokens.create_service_token(
            session,
            principal,
            ctx.meta,
            name=name,
            role=role,
            clearance=clearance,
            department=department,
            scopes=scopes,
            expires_at=expires_at,
        )


async def revoke_api_token(ctx: Context, token_id: str) -> ApiToken:
    principal = ctx.require_principal()
    async with ctx.transaction.write() as session:
        return await api_tokens.revoke_api_token(
            session, principal, ctx.meta, token_id=expect_id(token_id, "ApiToken")
        )
