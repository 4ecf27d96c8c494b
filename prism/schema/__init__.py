"""The GraphQL schema: types per domain, the root Query and Mutation, and its extensions."""

from __future__ import annotations

from datetime import datetime

import strawberry
from graphql import ASTValidationRule, GraphQLError, NoSchemaIntrospectionCustomRule
from strawberry.extensions import AddValidationRules, MaxAliasesLimiter, QueryDepthLimiter
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from prism.schema.audit import AuditEvent, Job
from prism.schema.bi import SCALARS as BI_SCALARS
from prism.schema.documents import Analysis, Document, Feedback, Section
from prism.schema.extensions import (
    ErrorCodes,
    Metrics,
    OneSecretCheckPerRequest,
    RequestTransaction,
)
from prism.schema.identity import ApiToken, Organization, User
from prism.schema.mutation import Mutation
from prism.schema.query import Query
from prism.schema.subscription import Subscription


def _parse_datetime(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("A DateTime is an ISO 8601 string.")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        # A time without an offset means different instants on different servers.
        raise ValueError("A DateTime needs a UTC offset, e.g. 2026-01-31T09:00:00Z.")
    return parsed


DATETIME = strawberry.scalar(
    name="DateTime",
    description="ISO 8601 date and time with a UTC offset.",
    serialize=lambda value: value.isoformat(),
    parse_value=_parse_datetime,
)

MAX_DEPTH = 12
MAX_ALIASES = 30


class PrismSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Client errors are answers, not incidents: ErrorCodes logs the unexpected ones."""


def build_schema(*, production: bool) -> strawberry.Schema:
    # Order matters: Metrics wraps ErrorCodes so it counts the codes clients see.
    # Classes or factories: Strawberry builds fresh extensions for every request.
    extensions: list[object] = [
        RequestTransaction,
        Metrics,
        ErrorCodes,
        lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
        lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
    ]
    rules: list[type[ASTValidationRule]] = [OneSecretCheckPerRequest]
    if production:
        rules.append(NoSchemaIntrospectionCustomRule)
    extensions.append(lambda: AddValidationRules(rules))
    return PrismSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[
            Organization,
            User,
            ApiToken,
            Document,
            Section,
            Analysis,
            Feedback,
            AuditEvent,
            Job,
        ],
        extensions=extensions,  # type: ignore[arg-type]
        config=StrawberryConfig(
            disable_field_suggestions=production,
            scalar_map={datetime: DATETIME, **BI_SCALARS},
        ),
    )


def export_sdl() -> str:
    """The public surface as SDL, as committed in ``schema.graphql``."""
    return build_schema(production=False).as_str() + "\n"
