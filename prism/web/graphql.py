"""The GraphQL view over HTTP (and the WebSocket's upgrade): Strawberry's view with Prism's
edge rules.

Bodies are bounded before they are read, multipart requests need a CSRF header, malformed
requests get the typed error shape every answer has, persisted queries are resolved into
their text, a subscription over HTTP is refused (pointing to the WebSocket), and an outage
is a 503 with when to come back. ``get_context`` builds each request's ``Context``;
``on_ws_connect`` authenticates a WebSocket in its connection_init."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET

from prism.authn.bearer import authenticate_bearer
from prism.db.faults import RETRY_AFTER_SECONDS, answer_deadline, answered_within
from prism.errors import PrismError, Unauthenticated
from prism.execution import inputs
from prism.execution.context import Context, RequestTransaction
from prism.execution.limits import (
    CHARGED,
    bucket_key,
    charge_context_refusal,
    charge_refusal,
    rate_limited,
    refusal_spent,
)
from prism.models.audit import RequestMeta
from prism.services import Services
from prism.web.assets import Assets, Page, Policy, page_response
from prism.web.auth import PrincipalUser, bearer_of, caller_of, charged, rate_limited_response
from prism.web.body import (
    SUBSCRIPTIONS_OVER_WEBSOCKET,
    body_refusal,
    is_multipart,
    multipart_refusal,
    with_media_type_lowercased,
)
from prism.web.edge import MAX_JSON_BODY, operation_request_problem
from prism.web.guard import error_response
from prism.web.websocket import PrismTransportWS

_HTTP_CODES = {404: "NOT_FOUND", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}
# Headers a browser cannot send cross-site without a CORS preflight: their presence proves a
# multipart request is not a forged HTML form post.
CSRF_HEADERS = ("apollo-require-preflight", "x-prism-csrf")
MULTIPART_OVERHEAD = 1024 * 1024


class BodyTooLarge(Exception):
    pass


# GraphiQL, served by Prism from its own files (prism/web/assets.py). Its stylesheet embeds
# its fonts and icons as data: URLs; everything else comes from this origin. One inline style
# is allowed by its hash: the <style> element GraphiQL's dialogs (settings, shortcuts) add to
# lock the page's scrolling while open (react-remove-scroll), always the same text on this
# page (it has no scroll bar and no body margin). tests/test_browser.py opens them and fails
# on any violation.
GRAPHIQL_DIALOG_STYLE = "'sha256-Y/huXlwoYkVyQlxwSVcCi1RCDGDCSVBzDt0hYP9qlTc='"
GRAPHIQL = Page(
    title="Prism GraphiQL",
    what="GraphiQL",
    styles=("graphiql.css", "graphiql-explorer.css", "prism-graphiql.css"),
    scripts=(
        "react.js",
        "react-dom.js",
        "graphiql.js",
        "graphiql-explorer.js",
        "prism-graphiql.js",
    ),
    body=(
        '<header class="prism-bar"><strong>Prism GraphiQL</strong>'
        '<form id="prism-sign-in"><label for="prism-token">Bearer token</label>'
        '<input id="prism-token" type="password" autocomplete="off" spellcheck="false"'
        ' placeholder="prism_pat_… or an access token from login">'
        '<button type="submit">Sign in</button></form>'
        '<span id="prism-status" role="status" aria-live="polite">Loading…</span>'
        '<button id="prism-sign-out" type="button" hidden>Sign out</button></header>'
        '<main id="graphiql"><noscript>GraphiQL needs JavaScript.</noscript></main>'
    ),
    policy=Policy(images=("data:",), fonts=("data:",), styles=(GRAPHIQL_DIALOG_STYLE,)),
)


class PrismGraphQL(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = PrismTransportWS

    def __init__(
        self, *args: Any, max_upload_bytes: int, assets: Assets | None = None, **kwargs: Any
    ) -> None:
        # One WebSocket protocol, whose every operation is authenticated and authorized as
        # an HTTP request (the legacy `graphql-ws` handler shares one context per socket).
        kwargs.setdefault("subscription_protocols", (GRAPHQL_TRANSPORT_WS_PROTOCOL,))
        super().__init__(*args, **kwargs)
        self.max_body = max_upload_bytes + MULTIPART_OVERHEAD
        self.assets = assets or Assets()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope["headers"] = with_media_type_lowercased(list(scope.get("headers") or []))
        multipart = is_multipart(dict(scope["headers"]).get(b"content-type"))
        limit = self.max_body if multipart else MAX_JSON_BODY
        # A caller who cannot pay for one more refused request is answered before its body
        # is read, parsed, or its persisted query looked up.
        spent = await refusal_spent(scope["app"].state.services, caller_of(scope))
        if spent is not None:
            scope.setdefault("state", {})[CHARGED] = True
            await rate_limited_response(spent)(scope, receive, send)
            return
        request = Request(scope=scope, receive=self._limited(receive, limit))
        refusal = self.refuse_unread(request)
        if refusal is not None:
            await (await charged(scope, refusal))(scope, receive, send)
            return
        # Strawberry answers malformed HTTP requests (no query, bad JSON, a mutation over
        # GET) in plain text; clients get the same typed error shape as everywhere else.
        try:
            response = await self.run(request)
        except HTTPException as exc:
            code = _HTTP_CODES.get(exc.status_code, "BAD_USER_INPUT")
            status = exc.status_code
            if exc.reason == "Unsupported content type":
                code, status = "UNSUPPORTED_MEDIA_TYPE", 415
            response = error_response(status, code, exc.reason)
        except StarletteHTTPException as exc:
            # The multipart parser's refusals (no boundary, too many fields or files).
            status, code = multipart_refusal(exc.detail)
            response = error_response(status, code, exc.detail)
        except UnicodeDecodeError:
            response = error_response(400, "BAD_USER_INPUT", "The request body is not UTF-8.")
        except BodyTooLarge:
            response = error_response(
                413, "PAYLOAD_TOO_LARGE", f"The request body exceeds {limit} bytes."
            )
        finally:
            await request.close()  # the spooled files of a multipart form, however it ended
        if response.status_code >= 400 and response.status_code != 429:
            response = await charged(scope, response)
        await response(scope, receive, send)

    def refuse_unread(self, request: Request) -> Response | None:
        """The refusal of a request decided from its headers, before its body is read
        (an unreadable media type or encoding, a size over the limit, a multipart request
        without a CSRF header); None when it may be read."""
        content_type = request.headers.get("content-type", "")
        length = request.headers.get("content-length")
        if request.method != "POST":
            return None
        unreadable = body_refusal(content_type, request.headers.get("content-encoding"))
        if unreadable is not None:
            return error_response(415, "UNSUPPORTED_MEDIA_TYPE", unreadable)
        if not is_multipart(content_type):
            if length is not None and length.isdigit() and int(length) > MAX_JSON_BODY:
                return error_response(
                    413, "PAYLOAD_TOO_LARGE", f"Requests are limited to {MAX_JSON_BODY} bytes."
                )
            return None
        if not any(request.headers.get(h) for h in CSRF_HEADERS):
            return error_response(
                400,
                "BAD_USER_INPUT",
                "Multipart requests need an `Apollo-Require-Preflight` (or `X-Prism-CSRF`) "
                "header: it protects against cross-site request forgery.",
            )
        if length is not None and length.isdigit() and int(length) > self.max_body:
            # Refused before a byte of the body is read.
            return error_response(
                413, "PAYLOAD_TOO_LARGE", f"Uploads are limited to {self.max_body} bytes."
            )
        return None

    @staticmethod
    def _limited(receive: Receive, limit: int) -> Receive:
        """Count body bytes as they arrive (a chunked body has no Content-Length)."""
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        return counted

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Resolve a persisted query (registered or automatic) into its text first."""
        try:
            resolved = await context.resolve_operation(request_data.query, request_data.extensions)
        except PrismError as exc:
            limited = await charge_context_refusal(context)
            if limited is not None:
                sub_response.status_code = 429
            return ExecutionResult(
                data=None,
                errors=[limited or GraphQLError(exc.message, extensions=exc.extensions)],
            )
        return await self._execute_query_or_mutation(
            request_adapter, context, root_value, replace(request_data, query=resolved.query)
        )

    async def _execute_query_or_mutation(
        self,
        request_adapter: AsyncHTTPRequestAdapter,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Strawberry's execution of one HTTP operation, where a subscription is not run
        (it would resolve as a query, to an internal error): it is refused, pointing to the
        WebSocket."""
        method = request_adapter.method
        allowed = OperationType.from_http(method) - {OperationType.SUBSCRIPTION}
        if not self.allow_queries_via_get and method == "GET":
            allowed -= {OperationType.QUERY}
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except CannotGetOperationTypeError as exc:
            raise HTTPException(400, exc.as_http_error_reason()) from exc
        except InvalidOperationTypeError as exc:
            if exc.operation_type is OperationType.SUBSCRIPTION:
                raise HTTPException(400, SUBSCRIPTIONS_OVER_WEBSOCKET) from exc
            raise HTTPException(400, exc.as_http_error_reason(method)) from exc
        except MissingQueryError as exc:
            raise HTTPException(400, "No GraphQL query found in the request") from exc

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        """Strawberry's parsing, then the request shape every transport checks alike."""
        parsed = await super().parse_http_body(request)
        for item in parsed if isinstance(parsed, list) else [parsed]:
            problem = operation_request_problem(
                {
                    "query": item.query,
                    "variables": item.variables,
                    "extensions": item.extensions,
                    "operationName": item.operation_name,
                }
            )
            if problem is not None:
                raise HTTPException(400, problem)
        return parsed

    def decode_json(self, data: str | bytes) -> object:
        """Every JSON the view and the WebSocket handler read: strict and shallow."""
        return inputs.decode_json(data)

    def parse_json(self, data: str | bytes) -> Any:
        """A request's JSON (a body, GET's variables and extensions, multipart's operations
        and map): an object or an array; null is taken for an empty object."""
        try:
            value = self.decode_json(data)
        except inputs.JsonRefused as exc:
            raise HTTPException(400, exc.msg) from exc
        if value is None:
            return {}
        if not isinstance(value, dict | list):
            raise HTTPException(400, "The request's JSON must be an object.")
        return value

    async def parse_multipart(self, request: AsyncHTTPRequestAdapter) -> dict[str, str]:
        """Strawberry's multipart parsing, with the spec's `map` applied strictly."""
        try:
            form = await request.get_form_data()
        except ValueError as exc:
            raise HTTPException(400, "Unable to parse the multipart body") from exc
        except StarletteHTTPException as exc:
            # No boundary, too many fields or files, a part too large: Starlette's refusal.
            status, _ = multipart_refusal(exc.detail)
            raise HTTPException(status, exc.detail) from exc
        fields = [form.form.get("operations", "{}"), form.form.get("map", "{}")]
        if not all(isinstance(field, str | bytes) for field in fields):
            raise HTTPException(400, "`operations` and `map` are form fields, not files.")
        operations, files_map = (self.parse_json(field) for field in fields)
        try:
            placed: dict[str, str] = inputs.place_files(operations, files_map, form.files)
        except inputs.MultipartRefused as exc:
            raise HTTPException(400, str(exc)) from exc
        return placed

    def streams(self, accept: str) -> bool:
        """Whether a request accepting ``accept`` is answered as a stream (server-sent
        events, multipart subscriptions) rather than one JSON answer."""
        return self._get_stream_transport_from_headers({"accept": accept}) is not None

    def should_render_graphql_ide(self, request: Any) -> bool:
        """GraphiQL for a browser's bare GET, not for a persisted query sent over GET."""
        return super().should_render_graphql_ide(request) and (
            request.query_params.get("extensions") is None
        )

    async def render_graphql_ide(self, request: Request) -> Response:
        """GraphiQL from Prism's own files, under a policy that lets it load nothing else."""
        return await page_response(self.assets, GRAPHIQL)

    def create_response(
        self, response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse], sub_response: Response
    ) -> Response:
        if sub_response.status_code == 304:
            # The client's copy is current: headers only (ETag, Cache-Control, limits).
            response = Response(status_code=304)
            response.headers.raw.extend(sub_response.headers.raw)
            return response
        response = Response(
            orjson.dumps(response_data),
            status_code=sub_response.status_code or 200,
            media_type="application/json",
        )
        response.headers.raw.extend(sub_response.headers.raw)
        outage = _outage(response_data)
        if outage is not None:
            # A dependency that is down: 503 when nothing was answered, and when to come back.
            if outage:
                response.status_code = 503
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    async def on_ws_connect(self, context: Context) -> Any:
        """Subscriptions authenticate in connection_init (browsers cannot set headers on a
        WebSocket): `{"authorization": "Bearer …"}`."""
        if context.principal is not None:
            return UNSET
        params = context.connection_params or {}
        raw = params.get("authorization") or params.get("Authorization") or ""
        bearer = str(raw).removeprefix("Bearer ").strip()
        if not bearer:
            raise await _rejected(context, "Authentication required.")
        services = context.services
        # A database that is down is not a rejection (4403): its error goes on to
        # RequestGuard, which closes the socket with 1013 (try again later). No HTTP request
        # deadline runs here: the answer has one of its own.
        deadline = answer_deadline(services.settings.request_timeout_seconds)
        try:
            async with answered_within(deadline, "connection_init"):
                principal = await authenticate_bearer(
                    services.db, services.access_tokens, bearer, services.credentials
                )
        except Unauthenticated as exc:
            raise await _rejected(context, exc.message) from exc
        context.authenticate(principal, bearer)
        return UNSET

    async def get_context(self, request: Any, response: Any) -> Context:
        services: Services = request.app.state.services
        user = request.scope.get("user")
        principal = user.principal if isinstance(user, PrincipalUser) else None
        client = request.client
        return Context(
            services=services,
            principal=principal,
            meta=RequestMeta(
                ip_address=client.host if client else None,
                user_agent=request.headers.get("user-agent"),
                request_id=request.scope.get("state", {}).get("request_id"),
            ),
            transaction=RequestTransaction(
                services.db, principal.organization_id if principal else None
            ),
            request=request,
            # Headers go on HTTP responses; a WebSocket's handshake is long gone.
            response=response if isinstance(response, Response) else None,
            credential=bearer_of(request) if principal is not None else None,
        )


_OUTAGE_CODES = frozenset({"SERVICE_UNAVAILABLE", "OUTCOME_UNKNOWN"})


def _outage(response_data: object) -> bool | None:
    """None: no error says a dependency is down; True: one does and no root field has data
    (the whole answer is that error); False: one does beside some data."""
    if not isinstance(response_data, dict):
        return None
    errors = response_data.get("errors") or []
    if not any((e.get("extensions") or {}).get("code") in _OUTAGE_CODES for e in errors):
        return None
    data = response_data.get("data")
    return not data or all(value is None for value in data.values())


async def _rejected(context: Context, message: str) -> ConnectionRejectionError:
    """A WebSocket's connection_init that does not authenticate: a refusal, charged to the
    source address like an HTTP 401 (RATE_LIMITED once the address cannot pay)."""
    found = await charge_refusal(context.services, bucket_key(context))
    if found is not None and not found.bucket.allowed:
        error = rate_limited(found.charge, found.bucket)
        return ConnectionRejectionError(
            {"message": error.message, "code": "RATE_LIMITED", **(error.extensions or {})}
        )
    return ConnectionRejectionError({"message": message, "code": "UNAUTHENTICATED"})
