"""``explainAccess``: why a principal may or may not do an action, from ``decide`` itself."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from prism.authn.bearer import principal_for, service_principal
from prism.authz.policy import Action, Decision, decide, require
from prism.authz.principal import Principal
from prism.documents.editing import resource_of
from prism.errors import BadUserInput, NotFound
from prism.execution.context import Context
from prism.execution.ids import from_global_id
from prism.models import documents as document_models
from prism.models import users as user_models
from prism.models.scope import Scope


async def explain(
    ctx: Context, principal_id: str, action_name: str, resource_id: str | None
) -> tuple[Principal, Decision]:
    admin = ctx.require_principal()
    require(admin, Action.USER_UPDATE)  # who may manage users may see why access differs
    try:
        action = Action(action_name)
    except ValueError as exc:
        known = ", ".join(a.value for a in Action)
        raise BadUserInput(f"Unknown action; known: {known}.", argument="action") from exc
    organization = admin.organization_id
    system = Scope.system(organization)
    kind, row_id = from_global_id(principal_id)
    async with ctx.transaction.read() as session:
        subject = await _principal(session, organization, kind, row_id)
        resource = None
        if resource_id is not None:
            resource_kind, resource_row = from_global_id(resource_id)
            documents = (
                await document_models.read_documents_by_ids(session, system, [resource_row])
                if resource_kind == "Document"
                else []
            )
            if not documents:
                raise NotFound("Document not found.")
            resource = resource_of(documents[0])
    return subject, decide(subject, action, resource)


async def _principal(
    session: AsyncSession, organization: uuid.UUID, kind: str, row_id: uuid.UUID
) -> Principal:
    if kind == "User":
        users = await user_models.read_users_by_ids(session, organization, [row_id])
        if users:
            return principal_for(users[0])
    elif kind == "ApiToken":
        tokens = await user_models.read_api_tokens_by_ids(session, organization, [row_id])
        if tokens:
            token = tokens[0]
            if token.user_id is None:
                return service_principal(token)
            users = await user_models.read_users_by_ids(session, organization, [token.user_id])
            if users:
                return principal_for(users[0], frozenset(token.scopes), token.id)
    raise NotFound("Principal not found.")
