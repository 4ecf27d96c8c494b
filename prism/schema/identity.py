"""Organizations, users, API tokens and the viewer; the identity fields of the root Query
(users, API tokens) and Mutation (sign-in, sessions, passwords, MFA, API tokens, users)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from prism.execution.ids import to_global_id
from prism.models import organizations as org_models
from prism.models import users as user_models
from prism.models.pagination import Page
from prism.resolvers import identity as identity_resolvers
from prism.resolvers import tokens as token_resolvers
from prism.schema.base import After, Edge, First, Info, Node, PageInfo, edges_of
from prism.schema.enums import Classification, Role


@strawberry.type(description="A customer organization: every row of Prism belongs to one.")
class Organization(Node):
    name: str
    domain: str | None
    subscription_tier: str
    data_retention_days: int
    created_at: datetime

    @classmethod
    def from_row(cls, row: org_models.Organization) -> Organization:
        return cls(
            id=strawberry.ID(to_global_id("Organization", row.id)),
            name=row.name,
            domain=row.domain,
            subscription_tier=row.subscription_tier,
            data_retention_days=row.data_retention_days,
            created_at=row.created_at,
        )


@strawberry.type(description="A person who signs in to Prism.")
class User(Node):
    email: str
    first_name: str | None
    last_name: str | None
    role: Role
    department: str | None
    clearance: Classification
    mfa_enabled: bool
    access_expires_at: datetime | None
    last_login_at: datetime | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: user_models.User) -> User:
        return cls(
            id=strawberry.ID(to_global_id("User", row.id)),
            email=row.email,
            first_name=row.first_name,
            last_name=row.last_name,
            role=row.role,
            department=row.department,
            clearance=row.clearance,
            mfa_enabled=row.mfa_enabled,
            access_expires_at=row.access_expires_at,
            last_login_at=row.last_login_at,
            created_at=row.created_at,
        )


@strawberry.type(
    description="An API token. The secret is shown once, at creation; only its prefix is kept."
)
class ApiToken(Node):
    name: str
    prefix: str
    scopes: list[str]
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: user_models.ApiToken) -> ApiToken:
        return cls(
            id=strawberry.ID(to_global_id("ApiToken", row.id)),
            name=row.name,
            prefix=row.prefix,
            scopes=list(row.scopes),
            expires_at=row.expires_at,
            last_used_at=row.last_used_at,
            revoked_at=row.revoked_at,
            created_at=row.created_at,
        )


@strawberry.type
class UserEdge(Edge):
    node: User


@strawberry.type(description="A page of users.")
class UserConnection:
    edges: list[UserEdge]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: Page[user_models.User]) -> UserConnection:
        return cls(
            edges=edges_of(page, User.from_row, UserEdge), page_info=PageInfo.from_page(page)
        )


@strawberry.type(
    description="The caller: a signed-in user or an API token, always inside one organization."
)
class Viewer:
    scopes: list[str] = strawberry.field(description="What the caller's credentials allow.")

    @strawberry.field(description="The caller's organization.")
    async def organization(self, info: Info) -> Organization:
        principal = info.context.require_principal()
        async with info.context.transaction.read() as session:
            row = await org_models.read_organization(session, principal.organization_id)
        assert row is not None  # the principal was just loaded from it
        return Organization.from_row(row)

    @strawberry.field(description="The signed-in user, or the user an API token acts for.")
    async def user(self, info: Info) -> User | None:
        principal = info.context.require_principal()
        if principal.user_id is None:
            return None
        row = await info.context.loaders.user.load(principal.user_id)
        return User.from_row(row) if row else None

    @strawberry.field(description="The API token of this call, if it was made with one.")
    async def api_token(self, info: Info) -> ApiToken | None:
        principal = info.context.require_principal()
        if principal.api_token_id is None:
            return None
        row = await info.context.loaders.api_token.load(principal.api_token_id)
        return ApiToken.from_row(row) if row else None


@strawberry.type
class IdentityQuery:
    """``users`` and ``apiTokens`` of the root Query."""

    @strawberry.field(description="Users of the caller's organization (ADMIN, AUDITOR).")
    async def users(self, info: Info, first: First = None, after: After = None) -> UserConnection:
        page = await identity_resolvers.read_users(info.context, first, after)
        return UserConnection.from_page(page)

    @strawberry.field(
        description="API tokens: the caller's own, or all of the organization's for ADMIN "
        "and AUDITOR."
    )
    async def api_tokens(self, info: Info) -> list[ApiToken]:
        rows = await token_resolvers.read_api_tokens(info.context)
        return [ApiToken.from_row(r) for r in rows]


@strawberry.type(description="A signed-in session.")
class AuthPayload:
    access_token: str = strawberry.field(description="Short-lived JWT for `Authorization: Bearer`.")
    refresh_token: str = strawberry.field(description="Single-use token for `refreshSession`.")
    expires_at: datetime = strawberry.field(description="When the access token expires.")
    user: User

    @classmethod
    def from_signed_in(cls, signed_in: identity_resolvers.SignedIn) -> AuthPayload:
        return cls(
            access_token=signed_in.access_token,
            refresh_token=signed_in.refresh_token,
            expires_at=signed_in.expires_at,
            user=User.from_row(signed_in.user),
        )


@strawberry.input(description="E-mail and password (and a TOTP code when MFA is on).")
class LoginInput:
    email: str
    password: str
    totp: str | None = None


@strawberry.input(description="The caller's current password and the new one.")
class ChangePasswordInput:
    current_password: str
    new_password: str = strawberry.field(description="12 to 1024 characters.")


@strawberry.input(description="A token from a password reset e-mail, and the new password.")
class ResetPasswordInput:
    token: str
    new_password: str = strawberry.field(description="12 to 1024 characters.")


@strawberry.type(description="A new authenticator to confirm with `confirmMfaEnrollment`.")
class MfaEnrollment:
    secret: str = strawberry.field(description="Base32 TOTP secret, for manual entry.")
    otpauth_uri: str = strawberry.field(description="otpauth:// URI, to show as a QR code.")


@strawberry.type(description="One-time backup codes: shown once, each works once.")
class MfaBackupCodes:
    backup_codes: list[str]
    user: User


@strawberry.input(description="A code from the authenticator app, or a backup code.")
class MfaCodeInput:
    code: str


@strawberry.input(description="A new API token, bound to the caller.")
class CreateApiTokenInput:
    name: str
    scopes: list[str] = strawberry.field(description="Subset of the caller's scopes.")
    expires_at: datetime | None = None


@strawberry.input(
    description="A token of the organization, not of a person: a partner's integration keeps "
    "working when whoever made it leaves."
)
class CreateServiceTokenInput:
    name: str
    role: Role = strawberry.field(description="What the token may do (its scopes narrow it).")
    clearance: Classification = strawberry.field(
        description="What it may read; at most the caller's."
    )
    department: str | None = strawberry.field(
        default=None, description="Its department, for RESTRICTED documents."
    )
    scopes: list[str] = strawberry.field(description="Subset of the caller's scopes.")
    expires_at: datetime | None = None


@strawberry.type(description="A new API token.")
class CreateApiTokenPayload:
    token: str = strawberry.field(description="Shown once, never stored in the clear.")
    api_token: ApiToken


@strawberry.input(description="A new user of the caller's organization.")
class CreateUserInput:
    email: str
    password: str = strawberry.field(description="12 to 1024 characters.")
    first_name: str | None = None
    last_name: str | None = None
    role: Role
    department: str | None = None
    clearance: Classification | None = None
    access_expires_at: datetime | None = None


@strawberry.input(description="Changes to a user; omitted fields stay as they are.")
class UpdateUserInput:
    id: strawberry.ID
    role: Role | None = None
    department: str | None = None
    clearance: Classification | None = None
    access_expires_at: datetime | None = None


@strawberry.type
class IdentityMutation:
    """``login`` ... ``updateUser`` of the root Mutation."""

    @strawberry.mutation(description="Sign in with e-mail and password.")
    async def login(self, info: Info, input: LoginInput) -> AuthPayload:
        signed_in = await identity_resolvers.login(
            info.context, input.email, input.password, input.totp
        )
        return AuthPayload.from_signed_in(signed_in)

    @strawberry.mutation(
        description="Trade a refresh token for a new session (the old token stops working)."
    )
    async def refresh_session(self, info: Info, refresh_token: str) -> AuthPayload:
        signed_in = await identity_resolvers.refresh_session(info.context, refresh_token)
        return AuthPayload.from_signed_in(signed_in)

    @strawberry.mutation(
        description="End the session of a refresh token; false if it was not active."
    )
    async def logout(self, info: Info, refresh_token: str) -> bool:
        return await identity_resolvers.logout(info.context, refresh_token)

    @strawberry.mutation(
        description="Change the caller's password, with the current one (signed-in session "
        "only); the caller's other sessions end. A wrong current password counts as a failed "
        "sign-in."
    )
    async def change_password(self, info: Info, input: ChangePasswordInput) -> bool:
        return await identity_resolvers.change_password(
            info.context, input.current_password, input.new_password
        )

    @strawberry.mutation(
        description="E-mail a password reset token to this address, if it is a user's. The "
        "answer is `true` either way: it says nothing about whether the address exists."
    )
    async def request_password_reset(self, info: Info, email: str) -> bool:
        return await identity_resolvers.request_password_reset(info.context, email)

    @strawberry.mutation(
        description="Set a new password with the token of a reset e-mail. The token works "
        "once (and voids the user's other reset tokens); every session of the user ends."
    )
    async def reset_password(self, info: Info, input: ResetPasswordInput) -> bool:
        return await identity_resolvers.reset_password(
            info.context, input.token, input.new_password
        )

    @strawberry.mutation(
        description="Start MFA enrolment: a new TOTP secret for the caller's authenticator "
        "app (signed-in session only)."
    )
    async def begin_mfa_enrollment(self, info: Info) -> MfaEnrollment:
        secret, uri = await identity_resolvers.begin_mfa_enrollment(info.context)
        return MfaEnrollment(secret=secret, otpauth_uri=uri)

    @strawberry.mutation(
        description="Turn MFA on with a code from the new authenticator; returns backup codes."
    )
    async def confirm_mfa_enrollment(self, info: Info, input: MfaCodeInput) -> MfaBackupCodes:
        codes, row = await identity_resolvers.confirm_mfa_enrollment(info.context, input.code)
        return MfaBackupCodes(backup_codes=codes, user=User.from_row(row))

    @strawberry.mutation(
        description="Replace the caller's backup codes (the old ones stop working)."
    )
    async def regenerate_mfa_backup_codes(self, info: Info, input: MfaCodeInput) -> MfaBackupCodes:
        codes, row = await identity_resolvers.regenerate_mfa_backup_codes(info.context, input.code)
        return MfaBackupCodes(backup_codes=codes, user=User.from_row(row))

    @strawberry.mutation(description="Turn the caller's MFA off, with a current or backup code.")
    async def disable_mfa(self, info: Info, input: MfaCodeInput) -> User:
        return User.from_row(await identity_resolvers.disable_mfa(info.context, input.code))

    @strawberry.mutation(
        description="Turn off another user's MFA when their authenticator and backup codes "
        "are lost (ADMIN, signed-in session only)."
    )
    async def reset_user_mfa(self, info: Info, user_id: strawberry.ID) -> User:
        row = await identity_resolvers.reset_user_mfa(info.context, user_id)
        return User.from_row(row)

    @strawberry.mutation(
        description="Create an API token for the caller; the secret is in the answer only."
    )
    async def create_api_token(
        self, info: Info, input: CreateApiTokenInput
    ) -> CreateApiTokenPayload:
        secret, row = await token_resolvers.create_api_token(
            info.context, input.name, input.scopes, input.expires_at
        )
        return CreateApiTokenPayload(token=secret, api_token=ApiToken.from_row(row))

    @strawberry.mutation(
        description="Create a service token that belongs to the organization, with its own "
        "role, clearance and scopes (ADMIN, signed-in session only); the secret is in the "
        "answer only."
    )
    async def create_service_token(
        self, info: Info, input: CreateServiceTokenInput
    ) -> CreateApiTokenPayload:
        secret, row = await token_resolvers.create_service_token(
            info.context,
            input.name,
            input.role,
            input.clearance,
            input.department,
            input.scopes,
            input.expires_at,
        )
        return CreateApiTokenPayload(token=secret, api_token=ApiToken.from_row(row))

    @strawberry.mutation(description="Revoke an API token: it stops working on the next request.")
    async def revoke_api_token(self, info: Info, id: strawberry.ID) -> ApiToken:
        row = await token_resolvers.revoke_api_token(info.context, id)
        return ApiToken.from_row(row)

    @strawberry.mutation(description="Create a user in the caller's organization (ADMIN).")
    async def create_user(self, info: Info, input: CreateUserInput) -> User:
        row = await identity_resolvers.create_user(
            info.context,
            identity_resolvers.NewUser(
                email=input.email,
                password=input.password,
                role=input.role,
                clearance=input.clearance,
                first_name=input.first_name,
                last_name=input.last_name,
                department=input.department,
                access_expires_at=input.access_expires_at,
            ),
        )
        return User.from_row(row)

    @strawberry.mutation(
        description="Change a user's role, department, clearance or access expiry (ADMIN)."
    )
    async def update_user(self, info: Info, input: UpdateUserInput) -> User:
        changes = {
            name: value
            for name, value in (
                ("role", input.role),
                ("department", input.department),
                ("clearance", input.clearance),
                ("access_expires_at", input.access_expires_at),
            )
            if value is not None
        }
        row = await identity_resolvers.update_user(info.context, input.id, changes)
        return User.from_row(row)
