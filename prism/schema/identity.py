"""Organizations, users, API tokens and the viewer."""

from __future__ import annotations

from datetime import datetime

import strawberry

from prism.execution.ids import to_global_id
from prism.models import organizations as org_models
from prism.models import users as user_models
from prism.models.pagination import Page
from prism.schema.base import Edge, Info, Node, PageInfo, edges_of
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
