"""The GraphQL schema: types per domain, the root Query and Mutation, and its extensions."""

from __future__ import annotations

from datetime import UTC, datetime

import strawberry
from graphql import ASTValidationRule, GraphQLError, NoSchemaIntrospectionCustomRule
from strawberry.extensions import MaxTokensLimiter
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from prism import tracing
from prism.config import Settings
from prism.execution import DOCUMENTS_KEPT
from prism.execution.extensions import (
    ErrorCodes,
    Metrics,
    OneSecretCheckPerRequest,
    ParseCache,
    ResponseExtensions,
    Tracing,
    TransactionEnd,
)
from prism.execution.inputs import InputBounds
from prism.execution.limits import OperationCost, RateLimit, ResponseCache
from prism.execution.planned import CompiledOperations, PlannedRootsExecution
from prism.execution.safelist import RegisteredOperationsOnly
from prism.execution.validation import (
    CheckedValidation,
    Limits,
    NoSuggestionsExecutionContext,
    Validation,
)
from prism.schema.audit import AuditEvent, Job
from prism.schema.bi import SCALARS as BI_SCALARS
from prism.schema.documents import Analysis, Document, Feedback, Section
from prism.schema.identity import ApiToken, Organization, User
from prism.schema.mutation import Mutation
from prism.schema.privacy import DataExport
from prism.schema.query import Query
from prism.schema.subscription import Subscription


def _parse_datetime(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("A DateTime is an ISO 8601 string.")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        # A time without an offset means different instants on different servers.
        raise ValueError("A DateTime needs a UTC offset, e.g. 2026-01-31T09:00:00Z.")
    try:
        # Every DateTime is compared and stored as an instant: its offset must not push it
        # out of the representable years (0001-01-01T00:00:00+14:00 is in year 0 in UTC).
        parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            "A DateTime must fall between 0001-01-01 and 9999-12-31 once converted to UTC."
        ) from None
    return parsed


DATETIME = strawberry.scalar(
    name="DateTime",
    description="ISO 8601 date and time with a UTC offset.",
    serialize=lambda value: value.isoformat(),
    parse_value=_parse_datetime,
)

MAX_DEPTH = 12
MAX_ALIASES = 30
# Distinct documents whose validation is kept (an LRU shared by the process).
PARSE_CACHE_SIZE = DOCUMENTS_KEPT


class PrismSchema(strawberry.Schema):
    # How documents are validated and parsed, for the lean path (prism.web.lean), which
    # checks a planned request as the extensions below do.
    validation: Validation | None = None
    max_tokens: int | None = None

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Client errors are answers, not incidents: ErrorCodes logs the unexpected ones."""


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    """The schema as ``settings`` ask (None: development defaults, as exported)."""
    settings = settings or Settings(_env_file=None)
    # Order matters: Metrics wraps ErrorCodes so it counts the codes clients see; the cost
    # is estimated before the cache is asked, which is asked before the rate limit charges.
    # Classes or factories: Strawberry builds fresh extensions for every request.
    # Depth, aliases and expanded size are measured in one linear pass before the standard
    # rules (prism.execution.validation); refused requests are charged to the caller's bucket.
    rules: list[type[ASTValidationRule]] = [OneSecretCheckPerRequest]
    if not settings.serves_introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    limits = Limits(
        max_depth=MAX_DEPTH,
        max_aliases=MAX_ALIASES,
        max_selections=settings.max_query_selections,
    )
    validation = Validation(
        tuple(rules), limits, hide_suggestions=settings.production, cache_size=PARSE_CACHE_SIZE
    )
    extensions: list[object] = [
        TransactionEnd,
        ResponseExtensions,
        Metrics,
        ErrorCodes,
        ParseCache,
        # Before validation: a caller held to registered operations learns nothing of the
        # schema from a document it may not send; input past its bounds is refused before
        # anything walks it further.
        RegisteredOperationsOnly,
        InputBounds,
        lambda: CheckedValidation(validation),
        lambda: MaxTokensLimiter(max_token_count=settings.max_query_tokens),
        OperationCost,
        ResponseCache,
        RateLimit,
        CompiledOperations,
    ]
    if tracing.ENABLED:
        # Outermost: the operation's span holds all of it, the transaction's end included.
        extensions.insert(0, Tracing)
    schema = PrismSchema(
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
            DataExport,
        ],
        extensions=extensions,  # type: ignore[arg-type]
        # production: variable coercion suggests no names either
        execution_context_class=(
            NoSuggestionsExecutionContext if settings.production else PlannedRootsExecution
        ),
        config=StrawberryConfig(
            disable_field_suggestions=settings.production,
            scalar_map={datetime: DATETIME, **BI_SCALARS},
        ),
    )
    schema.validation = validation
    schema.max_tokens = settings.max_query_tokens
    return schema


def export_sdl() -> str:
    """The public surface as SDL, as committed in ``schema.graphql``."""
    return build_schema().as_str() + "\n"
