"""Sign-in, sessions, passwords, MFA and users: each resolver calls one use case of
``prism.identity`` with the request's principal and metadata, in the request's transaction
(sign-in, refresh, sign-out and passwords run in transactions of their own: the caller is not
known yet, or a refused attempt must be counted even though the request fails)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prism.authn import throttle
from prism.authz.policy import Action, require
from prism.execution.context import Context
from prism.execution.ids import expect_id
from prism.identity import mfa, passwords, sessions, users
from prism.identity.sessions import SignedIn as SignedIn  # the answer the schema maps
from prism.models import users as user_models
from prism.models.enums import Classification, Role
from prism.models.pagination import Page, PageRequest
from prism.models.users import User

# --- sessions --------------------------------------------------------------------------------


async def login(ctx: Context, email: str, password: str, totp: str | None) -> SignedIn:
    # Sign-in runs in transactions of its own: the caller's organization (if any) must not
    # be switched under the request's other fields.
    with ctx.retry_after_header():
        return await sessions.login(
            ctx.services, ctx.meta, email=email, password=password, totp=totp
        )


async def refresh_session(ctx: Context, refresh_token: str) -> SignedIn:
    return await sessions.refresh(ctx.services, ctx.meta, refresh_token=refresh_token)


async def logout(ctx: Context, refresh_token: str) -> bool:
    return await sessions.logout(ctx.services, ctx.meta, refresh_token=refresh_token)


# --- passwords -------------------------------------------------------------------------------


async def change_password(ctx: Context, current_password: str, new_password: str) -> bool:
    principal = ctx.require_principal()
    # The caller's own session (the access token's) goes on; an API token has none.
    session_id = None
    if principal.api_token_id is None and ctx.credential is not None:
        session_id = ctx.services.access_tokens.verify(ctx.credential).session_id
    with ctx.retry_after_header():
        await passwords.change_password(
            ctx.services,
            principal,
            ctx.meta,
            session_id=session_id,
            current_password=current_password,
            new_password=new_password,
        )
    return True


async def request_password_reset(ctx: Context, email: str) -> bool:
    with ctx.retry_after_header():
        return await passwords.request_password_reset(ctx.services, ctx.meta, email=email)


async def reset_password(ctx: Context, token: str, new_password: str) -> bool:
    with ctx.retry_after_header():
        await passwords.reset_password(
            ctx.services, ctx.meta, token=token, new_password=new_password
        )
    return True


# --- MFA -------------------------------------------------------------------------------------


@asynccontextmanager
async def _code_attempt(ctx: Context) -> AsyncIterator[None]:
    """Codes checked in a session are throttled like sign-in: a stolen session must not be
    able to guess its way past the second factor."""
    principal = ctx.require_principal()
    services = ctx.services
    keys = throttle.SignInKeys.of(
        services.secrets, f"user:{principal.user_id}", ctx.meta.ip_address
    )
    with ctx.retry_after_header():
        await throttle.reserve(services.db, keys)
    yield
    await throttle.succeeded(services.db, keys)


async def begin_mfa_enrollment(ctx: Context) -> tuple[str, str]:
    """(secret, otpauth:// URI)."""
    principal = ctx.require_principal()
    async with ctx.transaction.write() as session:
        return await mfa.begin_enrollment(session, ctx.services, principal, ctx.meta)


async def confirm_mfa_enrollment(ctx: Context, code: str) -> tuple[list[str], User]:
    principal = ctx.require_principal()
    async with _code_attempt(ctx), ctx.transaction.write() as session:
        return await mfa.confirm_enrollment(session, ctx.services, principal, ctx.meta, code=code)


async def regenerate_mfa_backup_codes(ctx: Context, code: str) -> tuple[list[str], User]:
    principal = ctx.require_principal()
    async with _code_attempt(ctx), ctx.transaction.write() as session:
        return await mfa.regenerate_backup_codes(
            session, ctx.services, principal, ctx.meta, code=code
        )


async def disable_mfa(ctx: Context, code: str) -> User:
    principal = ctx.require_principal()
    async with _code_attempt(ctx), ctx.transaction.write() as session:
        return await mfa.disable(session, ctx.services, principal, ctx.meta, code=code)


async def reset_user_mfa(ctx: Context, user_id: str) -> User:
    principal = ctx.require_principal()
    async with ctx.transaction.write() as session:
        return await mfa.reset(session, principal, ctx.meta, user_id=expect_id(user_id, "User"))


# --- users -----------------------------------------------------------------------------------


async def read_users(ctx: Context, first: int | None, after: str | None) -> Page[User]:
    """A page of the users of the caller's organization."""
    principal = ctx.require_principal()
    require(principal, Action.USER_LIST)
    page_request = PageRequest.parse(first, after, ordering="users")
    async with ctx.transaction.read() as session:
        return await user_models.read_users(
            session, organization_id=principal.organization_id, page=page_request
        )


@dataclass(frozen=True)
class NewUser:
    email: str
    password: str
    role: Role
    clearance: Classification | None = None
    first_name: str | None = None
    last_name: str | None = None
    department: str | None = None
    access_expires_at: datetime | None = None


async def create_user(ctx: Context, new: NewUser) -> User:
    principal = ctx.require_principal()
    # Hashed before the transaction: no pooled connection waits on argon2.
    password_hash = await ctx.services.passwords.hash_async(new.password)
    async with ctx.transaction.write() as session:
        return await users.create_user(
            session,
            principal,
            ctx.meta,
            organization_id=principal.organization_id,
            email=new.email,
            password_hash=password_hash,
            role=new.role,
            clearance=new.clearance,
            first_name=new.first_name,
            last_name=new.last_name,
            department=new.department,
            access_expires_at=new.access_expires_at,
        )


async def update_user(ctx: Context, user_id: str, changes: dict[str, Any]) -> User:
    principal = ctx.require_principal()
    async with ctx.transaction.write() as session:
        return await users.update_user(
            session, principal, ctx.meta, user_id=expect_id(user_id, "User"), changes=changes
        )
