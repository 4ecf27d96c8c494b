"""``prism org``, ``user`` and ``token``: organizations, their users and API tokens, made by
the same use cases as the API's."""

from __future__ import annotations

from typing import Any

import click

from prism.audit import OPERATOR
from prism.cli.app import choice, emit, main, organization_option, with_services
from prism.identity import organizations, users
from prism.models.enums import Classification, Role
from prism.services import Services
from prism.tokens import api_tokens


@main.group()
def org() -> None:
    """Organizations."""


@org.command("create")
@click.argument("name")
@click.option("--domain", help="The organization's e-mail domain.")
@click.option("--json", "as_json", is_flag=True, help="Print the organization as JSON.")
def org_create(name: str, domain: str | None, as_json: bool) -> None:
    """Create an organization."""
    org_row = with_services(
        lambda s: organizations.create_organization(s, OPERATOR, name, domain=domain)
    )
    emit(
        {"id": str(org_row.id), "name": org_row.name, "domain": org_row.domain},
        as_json,
        f"Organization {org_row.name!r} created: {org_row.id}",
    )


@org.command("domain")
@click.argument("organization")
@click.argument("domain")
@click.option("--json", "as_json", is_flag=True, help="Print the organization as JSON.")
def org_domain(organization: str, domain: str, as_json: bool) -> None:
    """Set ORGANIZATION's e-mail domain (its ADMINs create users in it, nobody else can)."""

    async def work(services: Services) -> Any:
        org_id = await organizations.find_organization(services, organization)
        return await organizations.set_domain(services, OPERATOR, org_id, domain)

    org_row = with_services(work)
    emit(
        {"id": str(org_row.id), "name": org_row.name, "domain": org_row.domain},
        as_json,
        f"Organization {org_row.name!r} now has the e-mail domain {org_row.domain}",
    )


@main.group()
def user() -> None:
    """Users."""


@user.command("create")
@organization_option
@click.option("--email", required=True)
@click.option("--password", required=True, help="12 characters or more.")
@click.option("--role", required=True, type=choice(Role))
@click.option("--clearance", type=choice(Classification), default=None)
@click.option("--department", default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the user as JSON.")
def user_create(
    org_ref: str,
    email: str,
    password: str,
    role: str,
    clearance: str | None,
    department: str | None,
    as_json: bool,
) -> None:
    """Create a user."""

    async def work(services: Services) -> Any:
        org_id = await organizations.find_organization(services, org_ref)
        return await users.add_user(
            services,
            OPERATOR,
            org_id,
            email=email,
            password=password,
            role=Role(role.upper()),
            clearance=Classification(clearance.upper()) if clearance else None,
            department=department,
        )

    row = with_services(work)
    emit(
        {
            "id": str(row.id),
            "organizationId": str(row.organization_id),
            "email": row.email,
            "role": row.role.value,
            "clearance": row.clearance.value,
            "department": row.department,
        },
        as_json,
        f"User {row.email} ({row.role.value}) created: {row.id}",
    )


@main.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@organization_option
@click.option("--name", required=True)
@click.option("--scopes", required=True, help="Comma-separated, e.g. documents:read,search:read")
@click.option("--user", "user_email", default=None, help="Bind the token to this user's rights.")
@click.option(
    "--role",
    type=choice(Role),
    default="VIEWER",
    show_default=True,
    help="Role of an unbound (service) token.",
)
@click.option(
    "--clearance",
    type=choice(Classification),
    default="INTERNAL",
    show_default=True,
    help="Clearance of an unbound (service) token.",
)
@click.option("--expires-in-days", type=click.IntRange(1, 3650), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the token as JSON.")
def token_create(
    org_ref: str,
    name: str,
    scopes: str,
    user_email: str | None,
    role: str,
    clearance: str,
    expires_in_days: int | None,
    as_json: bool,
) -> None:
    """Create an API token; the secret is printed once."""

    async def work(services: Services) -> api_tokens.CreatedToken:
        org_id = await organizations.find_organization(services, org_ref)
        return await api_tokens.create_token(
            services,
            OPERATOR,
            org_id,
            name=name,
            scopes=[s.strip() for s in scopes.split(",") if s.strip()],
            user_email=user_email,
            role=Role(role.upper()),
            clearance=Classification(clearance.upper()),
            expires_in_days=expires_in_days,
        )

    created = with_services(work)
    t = created.token
    emit(
        {
            "token": created.secret,
            "id": str(t.id),
            "name": t.name,
            "prefix": t.prefix,
            "scopes": t.scopes,
            "expiresAt": t.expires_at,
        },
        as_json,
        created.secret,
    )
