"""What happens between validation and execution: the cost check, the response cache and the
rate limit. Each may answer in place of the resolvers (Strawberry skips execution when an
extension has set the result), so a refused or cached request runs no resolver at all."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import DocumentNode, GraphQLError, GraphQLSchema, OperationDefinitionNode
from graphql import ExecutionResult as GraphQLExecutionResult
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from prism.authn.throttle import source_of
from prism.authz.principal import Principal
from prism.cache.store import Bucket, Rate
from prism.execution import DOCUMENTS_KEPT
from prism.execution.context import Context
from prism.execution.cost import Estimate, actual, estimate, operation_of
from prism.observability import RATE_LIMITED, RESPONSE_CACHE
from prism.services import Services

# Root fields whose answers depend only on the caller's organization and visibility (role,
# clearance, department, scopes): callers alike share cached answers. PERSONAL ones also
# depend on who asks. Any other root field (a job's progress, an audit-chain check, the API
# tokens, whose use is stamped every minute, ...) is never cached.
SHARED = frozenset(
    {
        "documents",
        "document",
        "users",
        "search",
        # BI fields: rollups summed over the buckets the caller's clearance sees
        "executiveSummary",
        "dailySummary",
        "aiUsage",
        "riskDistribution",
        "feedbackAcceptance",
        "userActivity",
        "activityByHourOfDay",
    }
)
# (``auditLog``: an event's ``apiToken`` is shown only to who may read that token.)
PERSONAL = frozenset({"viewer", "node", "nodes", "auditLog"})


@dataclass
class CostReport:
    requested: int
    actual: int | None = None
    cached: bool = False


def _refuse(message: str, code: str, **details: Any) -> GraphQLExecutionResult:
    return GraphQLExecutionResult(
        data=None, errors=[GraphQLError(message, extensions={"code": code, **details})]
    )


def check_cost(
    context: Context,
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: dict[str, Any] | None,
) -> GraphQLExecutionResult | None:
    """Estimate the operation's cost (``context.cost``, ``context.root_fields``); the refusal
    when it has too many root fields or may return too many objects, else None."""
    settings = context.services.settings
    found = _estimate(schema, document, operation, variables)
    context.cost = CostReport(requested=found.cost)
    context.root_fields = list(found.root_fields)
    if found.root_field_count > settings.max_root_fields:
        return _refuse(
            f"The operation has {found.root_field_count} root fields; the limit is "
            f"{settings.max_root_fields}.",
            "QUERY_TOO_COMPLEX",
        )
    if found.cost > settings.max_query_cost:
        return _refuse(
            f"The operation may return {found.cost} objects; the limit is "
            f"{settings.max_query_cost}. Ask for smaller pages (`first`) or fewer levels.",
            "QUERY_TOO_COMPLEX",
            cost=found.cost,
        )
    return None


# Estimates by (schema, document, operation, variables): clients send the same few documents
# with the same few values over and over. The document is kept with its estimate, so the
# ids in a key are never those of another document.
_ESTIMATES: OrderedDict[tuple[int, int, int, bytes], tuple[DocumentNode, Estimate]] = OrderedDict()
ESTIMATE_CACHE_SIZE = DOCUMENTS_KEPT


def _estimate(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: dict[str, Any] | None,
) -> Estimate:
    try:
        values = orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an upload, or keys that are not strings: not remembered
        return estimate(schema, document, operation, variables)
    key = (id(schema), id(document), id(operation), values)
    found = _ESTIMATES.get(key)
    if found is not None and found[0] is document:
        _ESTIMATES.move_to_end(key)
        return found[1]
    made = estimate(schema, document, operation, variables)
    _ESTIMATES[key] = (document, made)
    while len(_ESTIMATES) > ESTIMATE_CACHE_SIZE:
        _ESTIMATES.popitem(last=False)
    return made


def cost_results(context: Context) -> dict[str, Any]:
    """The answer's ``extensions.cost``: what the operation could and did cost."""
    report = context.cost
    if report is None:
        return {}
    return {
        "cost": {
            "requested": report.requested,
            "actual": report.actual,
            "cached": report.cached,
        }
    }


class OperationCost(SchemaExtension):
    """Estimate the cost before execution; refuse what is too big; report both figures."""

    def on_execute(self) -> Iterator[None]:
        ctx = self.execution_context
        context = ctx.context
        document = ctx.graphql_document
        operation = operation_of(document, ctx.operation_name) if document is not None else None
        if not isinstance(context, Context) or document is None or operation is None:
            yield
            return
        refusal = check_cost(context, ctx.schema._schema, document, operation, ctx.variables)
        if refusal is not None:
            ctx.result = refusal
        yield
        count_actual(context, ctx.result)

    def get_results(self) -> dict[str, Any]:
        context = self.execution_context.context
        return cost_results(context) if isinstance(context, Context) else {}


def count_actual(context: Context, result: object) -> None:
    """The objects an answer holds, counted once (``extensions.cost.actual``)."""
    if context.cost is not None and context.cost.actual is None and result is not None:
        context.cost.actual = actual(getattr(result, "data", None))


def visibility_key(principal: Principal) -> str:
    """What decides what a principal sees, as a cache key part."""
    scopes = ",".join(sorted(principal.scopes)) if principal.scopes is not None else "*"
    return "|".join(
        (
            str(principal.organization_id),
            principal.role.value,
            principal.clearance.value,
            principal.department or "",
            scopes,
        )
    )


def cache_key(context: Context, variables: dict[str, Any] | None, version: int) -> str | None:
    principal = context.principal
    operation = context.operation
    if principal is None or operation is None or operation.sha256 is None:
        return None
    roots = set(context.root_fields)
    if not roots or not roots <= SHARED | PERSONAL:
        return None
    who = ""
    if roots & PERSONAL:
        who = f"{principal.user_id}|{principal.api_token_id}"
    parts = (
        visibility_key(principal),
        who,
        str(version),
        operation.sha256,
        orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS).decode(),
    )
    return "rc:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()


def etag(data: object) -> str:
    return etag_of(orjson.dumps(data))


def etag_of(body: bytes) -> str:
    """The ETag of an answer's ``data`` as written (a cached answer's as it was stored)."""
    return 'W/"' + hashlib.sha256(body).hexdigest()[:32] + '"'


@dataclass
class CacheLookup:
    """Where a request's answer is filed in the response cache (None: it is not cacheable),
    and the stored answer when there was one (``context.cost.cached`` is then set)."""

    key: str | None = None
    stored: bytes | None = None


async def look_up_answer(
    context: Context, variables: dict[str, Any] | None, *, query: bool
) -> CacheLookup:
    """The response cache's answer to a registered query, read under the organization's
    data version (in the request's transaction)."""
    if not (
        context.operation is not None
        and context.operation.registered
        and context.services.settings.response_cache_ttl_seconds > 0
        and query
        and context.principal is not None
    ):
        return CacheLookup()
    version = await context.data_version()
    key = cache_key(context, variables, version)
    if key is None:
        return CacheLookup()
    hit = await context.services.cache.get(key)
    RESPONSE_CACHE.labels("miss" if hit is None else "hit").inc()
    if hit is not None and context.cost is not None:
        context.cost.cached = True
    return CacheLookup(key, hit)


async def file_answer(
    context: Context, lookup: CacheLookup, data: object, *, query: bool, cached: bool
) -> None:
    """After an answer without errors: store it (when cacheable, not from the cache, and it
    read nothing RESTRICTED), and give a registered query's answer its validators (ETag,
    Cache-Control; 304 when the client's copy is current)."""
    operation = context.operation
    if operation is None:
        return
    # A planned answer's data is PostgreSQL's text (an orjson Fragment): dumped as is.
    body = lookup.stored if cached and lookup.stored is not None else orjson.dumps(data)
    if lookup.key is not None and not cached and not context.content_reads:
        await context.services.cache.set(
            lookup.key, body, context.services.settings.response_cache_ttl_seconds
        )
    if operation.registered and query:
        context.set_validators(etag_of(body), cacheable=lookup.key is not None)


class ResponseCache(SchemaExtension):
    """Answers to registered queries, cached per organization data version and visibility.

    An answer is stored only when it has no errors and read no RESTRICTED content (reads of
    which must be audited each time). Any committed write of the organization changes its
    data version (database triggers), so no cached answer outlives the data it shows."""

    async def on_execute(self) -> AsyncIterator[None]:
        ctx = self.execution_context
        context = ctx.context
        if not isinstance(context, Context):
            yield
            return
        query = ctx.operation_type is OperationType.QUERY
        lookup = CacheLookup()
        if ctx.result is None:
            lookup = await look_up_answer(context, ctx.variables, query=query)
            if lookup.stored is not None:
                ctx.result = GraphQLExecutionResult(data=orjson.loads(lookup.stored))
        yield
        result = ctx.result
        if result is None or result.errors or result.data is None:
            return
        cached = context.cost is not None and context.cost.cached
        await file_answer(context, lookup, result.data, query=query, cached=cached)


@dataclass
class Charge:
    """What a request was charged: its bucket, the amount, and the bucket after it (None:
    nothing was taken)."""

    key: str
    rate: Rate
    amount: int
    bucket: Bucket | None


async def charge_request(context: Context, *, refused: bool) -> tuple[Charge, GraphQLError | None]:
    """Charge the caller's bucket the estimated cost up front (1 for a cached answer;
    nothing for a request ``refused`` before it runs), with the rate-limit headers; the
    RATE_LIMITED error when the bucket cannot pay. An accepted automatic persisted query is
    stored."""
    assert context.cost is not None
    settings = context.services.settings
    rate = Rate(settings.rate_limit_capacity, settings.rate_limit_refill_per_second)
    key = bucket_key(context)
    amount = 1 if context.cost.cached else max(1, context.cost.requested)
    refused = refused and not context.cost.cached
    bucket = None if refused else await take(context.services, key, amount, rate)
    error = None
    if bucket is not None:
        context.rate_limit_headers(rate, bucket)
        if not bucket.allowed:
            RATE_LIMITED.labels("cost").inc()
            error = rate_limited(amount, bucket)
            context.cost.cached = False
    if error is None and (not refused or context.cost.cached):  # accepted
        await context.services.operations.remember(context.operation)
    return Charge(key, rate, amount, bucket), error


async def refund_unused(context: Context, charge: Charge) -> int:
    """Give back what the answer did not use of an accepted charge (a cached answer's 1
    stays taken); what was given back."""
    bucket = charge.bucket
    if bucket is None or not bucket.allowed or context.cost is None or context.cost.cached:
        return 0
    unused = charge.amount - max(1, context.cost.actual or 0)
    if unused <= 0:
        return 0
    await take(context.services, charge.key, -unused, charge.rate)
    return unused


class RateLimit(SchemaExtension):
    """A token bucket per API token, per user, or per source address when anonymous, charged
    the estimated cost up front (1 for a cached answer) and refunded what the answer did not
    use."""

    async def on_execute(self) -> AsyncIterator[None]:
        ctx = self.execution_context
        context = ctx.context
        if not isinstance(context, Context) or context.cost is None:
            yield
            return
        charge, error = await charge_request(context, refused=ctx.result is not None)
        if error is not None:
            ctx.result = GraphQLExecutionResult(data=None, errors=[error])
        yield
        count_actual(context, ctx.result)
        await refund_unused(context, charge)


def bucket_key(context: Context) -> str:
    return caller_key(context.principal, context.meta.ip_address)


def caller_key(principal: Principal | None, ip_address: str | None) -> str:
    """The rate-limit bucket of a caller: its API token, its user, or (anonymous, or not
    authenticated) its source address."""
    if principal is None:
        return f"rl:ip:{source_of(ip_address)}"
    if principal.api_token_id is not None:
        return f"rl:token:{principal.api_token_id}"
    return f"rl:user:{principal.user_id}"


# -- refusals: every request refused before it runs costs its caller ----------------------
#
# Whatever refuses it (the HTTP edge: bad JSON, no query, a batch, an unsupported content
# type, a bad bearer token; the persisted-query lookup: unknown hash, mismatch, a caller held
# to registered operations; the parser, the validation, the shape and cost limits, variables
# that do not coerce; over HTTP or a WebSocket), a refused request takes
# ``rate_limit_refusal_cost`` from its caller's bucket, once, through ``charge_refusal``. A
# caller whose bucket holds less than that is answered RATE_LIMITED before any of that work
# (``refusal_spent``): before the body is parsed, the persisted query looked up, or the
# document validated.

# Set in an HTTP request's scope["state"] once its refusal has been charged (by whichever
# layer saw it first), so that no other layer charges it again.
CHARGED = "prism.refusal_charged"


def rate_of(services: Services) -> Rate:
    settings = services.settings
    return Rate(settings.rate_limit_capacity, settings.rate_limit_refill_per_second)


def rate_limited(charge: int, bucket: Bucket) -> GraphQLError:
    return GraphQLError(
        f"Rate limit reached: this request costs {charge}; retry in {bucket.retry_after} seconds.",
        extensions={"code": "RATE_LIMITED", "retryAfter": bucket.retry_after},
    )


@dataclass(frozen=True)
class Refusal:
    """The outcome of charging (or checking) a caller's bucket for a refusal."""

    rate: Rate
    bucket: Bucket
    charge: int

    @property
    def error(self) -> GraphQLError | None:
        """RATE_LIMITED when the bucket could not pay; None when it did."""
        return None if self.bucket.allowed else rate_limited(self.charge, self.bucket)


class ShortBuckets:
    """The buckets this process has seen hold less than one refusal's charge: the only
    callers the door asks the store about. Everyone else passes the door with no I/O (the
    bucket stays the authority: a caller another process drained is noticed at its next
    charge here). Bounded: the oldest entries go first."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._keys: dict[str, None] = {}

    def note(self, key: str, bucket: Bucket, charge: int) -> None:
        if bucket.remaining >= charge:
            self._keys.pop(key, None)
            return
        self._keys[key] = None
        if len(self._keys) > self.size:
            del self._keys[next(iter(self._keys))]

    def __contains__(self, key: str) -> bool:
        return key in self._keys


SHORT = ShortBuckets()


async def take(services: Services, key: str, amount: int, rate: Rate) -> Bucket:
    """Take ``amount`` (negative: give back) from ``key``'s bucket, noting a bucket left
    short of a refusal's charge."""
    bucket = await services.cache.take(key, amount, rate)
    SHORT.note(key, bucket, services.settings.rate_limit_refusal_cost)
    return bucket


async def charge_refusal(services: Services, key: str) -> Refusal | None:
    """Take the refusal charge from ``key``'s bucket (None when refusals are free)."""
    charge = services.settings.rate_limit_refusal_cost
    if charge <= 0:
        return None
    rate = rate_of(services)
    bucket = await take(services, key, charge, rate)
    if not bucket.allowed:
        RATE_LIMITED.labels("refusal").inc()
    return Refusal(rate, bucket, charge)


async def refusal_spent(services: Services, key: str) -> Refusal | None:
    """The refusal (not allowed) when ``key``'s bucket cannot pay for one more refused
    request; None when it can. Takes nothing from a bucket that can pay, and asks the store
    only about buckets this process saw run short (``ShortBuckets``)."""
    charge = services.settings.rate_limit_refusal_cost
    if charge <= 0 or key not in SHORT:
        return None
    rate = rate_of(services)
    bucket = await take(services, key, 0, rate)
    if bucket.remaining >= charge:
        return None
    # Not enough left: taking the charge is refused, and says when it would not be.
    bucket = await take(services, key, charge, rate)
    if bucket.allowed:  # refilled in between: give it back
        await take(services, key, -charge, rate)
        return None
    RATE_LIMITED.labels("refusal").inc()
    return Refusal(rate, bucket, charge)


def _mark_charged(context: Context) -> bool:
    """Whether the request was already charged; marks it charged."""
    if context.refusal_charged:
        return True
    context.refusal_charged = True
    scope = getattr(context.request, "scope", None)
    # An HTTP request is one request; a WebSocket's scope is shared by all its operations.
    if isinstance(scope, dict) and scope.get("type") == "http":
        state = scope.setdefault("state", {})
        if state.get(CHARGED):
            return True
        state[CHARGED] = True
    return False


async def charge_context_refusal(context: Context) -> GraphQLError | None:
    """Charge the refusal of this request (once, whichever layer asks first); RATE_LIMITED
    when the caller's bucket could not pay (rate-limit headers set on HTTP)."""
    if _mark_charged(context):
        return None
    found = await charge_refusal(context.services, bucket_key(context))
    if found is None:
        return None
    context.rate_limit_headers(found.rate, found.bucket)
    return found.error


async def context_spent(context: Context) -> GraphQLError | None:
    """RATE_LIMITED (the request then counts as charged) when the caller cannot pay for a
    refusal; None otherwise."""
    found = await refusal_spent(context.services, bucket_key(context))
    if found is None:
        return None
    _mark_charged(context)
    context.rate_limit_headers(found.rate, found.bucket)
    return found.error
