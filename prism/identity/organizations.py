"""Organizations and their e-mail domains: created and given a domain by operators (the CLI,
the demo), each in its own organization-bound transaction; and the address checks every
user creation makes (docs/decisions/0014)."""

from __future__ import annotations

import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from prism import audit
from prism.audit import RequestMeta
from prism.authz.principal import Principal
from prism.errors import BadUserInput, Conflict, NotFound
from prism.models import organizations as org_models
from prism.models.addresses import canonical_domain, canonical_email
from prism.models.organizations import Organization
from prism.services import Services

# --- addresses -------------------------------------------------------------------------------


def normalize_email(email: str) -> str:
    """The address as it is stored and looked up (createUser, login, operators)."""
    canonical = canonical_email(email)
    if canonical is None:
        raise BadUserInput("Not a valid e-mail address.", argument="email")
    return canonical


def domain_of(email: str) -> str:
    """The canonical domain of an address (``normalize_email`` first, or any spelling)."""
    domain = email.rsplit("@", 1)[1]
    return canonical_domain(domain) or domain.lower()


def normalize_domain(domain: str) -> str:
    canonical = canonical_domain(domain.strip().removeprefix("@"))
    if canonical is None:
        raise BadUserInput("Not a valid e-mail domain.", argument="domain")
    return canonical


async def check_address_owner(
    session: AsyncSession, principal: Principal | None, organization_id: uuid.UUID, email: str
) -> None:
    """Whether ``email`` may be given to a user of ``organization_id``.

    An ADMIN (or a token) creates users only in its organization's own e-mail domain, and an
    organization's domain has no users of any other organization (``prism org domain`` and
    operators' ``add_user`` keep it so). So what an ADMIN learns here, and from the
    uniqueness check after it, depends only on its own organization: an address elsewhere is
    refused with the same answer, after the same single read, whether or not it has an
    account (docs/decisions/0014). Operators (no principal) are the platform's own staff:
    they may use any domain that no other organization owns."""
    domain = domain_of(email)
    if principal is None:
        owner = await org_models.domain_owner(session, domain)
        if owner is not None and owner != organization_id:
            raise Conflict(f"{domain} is the e-mail domain of another organization.")
        return
    org = await org_models.read_organization(session, organization_id)
    own = org.domain.lower() if org is not None and org.domain else None
    if own is None:
        raise BadUserInput(
            "This organization has no e-mail domain yet: an operator sets it "
            "(`prism org domain`) before its users can be created here.",
            argument="email",
        )
    if domain != own:
        raise BadUserInput(
            f"Users of this organization have addresses in its domain, {own}.",
            argument="email",
        )


# --- organizations (operators) ---------------------------------------------------------------


async def find_organization(services: Services, ref: str) -> uuid.UUID:
    """An organization by id or (case-insensitive) name."""
    async with services.db.transaction(None) as session:
        found = await org_models.find_organization(session, ref)
    if found is None:
        raise NotFound(f"No organization {ref!r}.")
    return found


async def _check_domain_free(session: AsyncSession, domain: str, org_id: uuid.UUID) -> None:
    """An organization's domain is its own: no other organization owns it or has users in it
    (what keeps an ADMIN's createUser from learning anything about other organizations)."""
    owner = await org_models.domain_owner(session, domain)
    if owner is not None and owner != org_id:
        raise Conflict(f"{domain} is the e-mail domain of another organization.")
    if await org_models.domain_used_elsewhere(session, domain, org_id):
        raise Conflict(
            f"Users of other organizations have addresses in {domain}: it cannot become "
            "this organization's domain until they are moved or erased."
        )


async def create_organization(
    services: Services,
    meta: RequestMeta,
    name: str,
    *,
    domain: str | None = None,
    tier: str = "standard",
) -> Organization:
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise BadUserInput("An organization name is 1 to 200 characters.")
    domain = normalize_domain(domain) if domain is not None else None
    org_id = uuid.uuid4()
    async with services.db.transaction(None) as session:
        if await org_models.find_organization(session, name) is not None:
            raise Conflict(f"An organization named {name!r} exists already.")
        if domain is not None:
            await _check_domain_free(session, domain, org_id)
    async with services.db.transaction(org_id) as session:
        try:
            async with session.begin_nested():
                org = await org_models.create_organization(
                    session,
                    organization_id=org_id,
                    name=name,
                    domain=domain,
                    subscription_tier=tier,
                )
        except IntegrityError as exc:  # a concurrent claim of the same name or domain
            raise Conflict("That organization name or domain was taken meanwhile.") from exc
        await audit.record(
            session,
            None,
            meta,
            organization_id=org_id,
            event_type="organization.create",
            category="administration",
            description=f"Organization {name!r} created",
            resource_type="Organization",
            resource_id=org_id,
            after={"name": name},
        )
    return org


async def set_domain(
    services: Services, meta: RequestMeta, organization_id: uuid.UUID, domain: str
) -> Organization:
    """Give an organization its e-mail domain (after checking, outside Prism, that it holds
    it): its ADMINs then create users in it, and nobody else can."""
    domain = normalize_domain(domain)
    async with services.db.transaction(organization_id) as session:
        await _check_domain_free(session, domain, organization_id)
        org = await org_models.lock_organization(session, organization_id)
        if org is None:
            raise NotFound("No such organization.")
        before = org.domain
        try:
            async with session.begin_nested():
                org.domain = domain
                await session.flush()
        except IntegrityError as exc:
            raise Conflict(f"{domain} was claimed by another organization meanwhile.") from exc
        await audit.record(
            session,
            None,
            meta,
            organization_id=organization_id,
            event_type="organization.domain",
            category="administration",
            description=f"E-mail domain set to {domain}",
            resource_type="Organization",
            resource_id=organization_id,
            before={"domain": before},
            after={"domain": domain},
        )
    return org
