"""The limit: a Starlette + asyncpg + orjson endpoint answering the benchmark's four queries
with the same SQL statements Prism sends for them, and nothing else.

It takes Prism's request bodies and picks a handler by ``operationName``: it neither parses
nor validates GraphQL, and its filters and page sizes are those of ``bench/perf/queries.py``.
Each request reads in one REPEATABLE READ transaction as ``prism_app`` (the startup role, as
Prism's engine sets it) after ``set_config('prism.org_id', …, true)``, like Prism's, so
row-level security applies the same way. The SQL below is Prism's, captured with PostgreSQL's
``log_statement = 'all'`` while Prism answered the same requests (commit e0d2e34; the
harness writes the statements of the current checkout to ``bench/results/perf-sql.md``).

Authentication: the bearer token is resolved once, through the same lookup function and rows
as Prism's, then kept in a dictionary: later requests cost a dictionary lookup, where Prism
authenticates each request in a transaction of its own. Only principals below RESTRICTED and
at least CONFIDENTIAL clearance are served (the benchmark's): they see every document of
their organization up to CONFIDENTIAL and nothing is masked for them.

The physical limit (issue 16): with BENCH_LIMIT_PLAN (a JSON file written by
``bench/perf/limit.py``), each query it names is answered by the one statement chosen there
(prism-compiled's or PostGraphile's, whichever PostgreSQL runs faster), with the values of the
benchmark's request, in the same transaction and settings; prism-compiled's statement returns
the answer's JSON text, sent as it is; PostGraphile's rows are reshaped into Prism's answer
(SHAPES). The queries it does not name keep Prism's interpreted statements (below).

Run by the harness as ``python -m uvicorn bench.perf.raw_app:app`` with BENCH_DATABASE_URL (an
asyncpg URL), BENCH_TOKENS (JSON: token -> API token id, for a sanity check) and optionally
BENCH_LIMIT_PLAN.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

APP_ROLE = "prism_app"
CLEARANCES = ("PUBLIC", "INTERNAL", "CONFIDENTIAL", "RESTRICTED")
SCOPES = (
    "analysis:run",
    "audit:read",
    "bi:read",
    "documents:read",
    "documents:write",
    "feedback:write",
    "search:read",
    "tokens:admin",
    "users:admin",
)

# --- Prism's statements ------------------------------------------------------------------------


def _columns(table: str, names: str) -> str:
    return ", ".join(f"{table}.{n}" for n in names.split())


def _in(first: int, count: int, cast: str = "") -> str:
    """SQLAlchemy's expanded IN list: ($6::UUID, $7::UUID, ...)."""
    return "(" + ", ".join(f"${first + i}{cast}" for i in range(count)) + ")"


DOCUMENT_COLUMNS = _columns(
    "documents",
    "id organization_id uploaded_by department filename mime_type file_size sha256 storage_key "
    "document_type classification language_code word_count page_count processing_status "
    "processing_error legal_hold retention_expires_at storage_tier total_sections "
    "total_feedback_items risk_level confidence cost_usd model_used created_at updated_at "
    "deleted_at",
)
SECTION_NAMES = "id organization_id document_id ord name content word_count pii_findings created_at"
ANALYSIS_NAMES = (
    "id organization_id document_id section_id model model_version started_at completed_at "
    "duration_seconds risk_level confidence tokens_used cost_usd feedback_items job_id created_at"
)
FEEDBACK_NAMES = (
    "id organization_id document_id section_id analysis_id user_id item_id action category "
    "rating custom_text highlighted_text workflow_status approved_by approved_at created_at "
    "updated_at"
)
USER_COLUMNS = _columns(
    "users",
    "id organization_id email password_hash first_name last_name role department clearance "
    "is_active mfa_enabled mfa_secret mfa_last_step access_expires_at last_login_at created_at "
    "updated_at",
)
TOKEN_COLUMNS = _columns(
    "api_tokens",
    "id organization_id user_id role clearance department name prefix token_hash scopes "
    "expires_at last_used_at revoked_at created_by created_at",
)
VISIBLE = (
    "documents.organization_id = $1::UUID AND documents.deleted_at IS NULL "
    "AND documents.classification IN ({classes})"
)

SET_ORG = "SELECT set_config($1::VARCHAR, $2::VARCHAR, $3::BOOLEAN) AS set_config_1"

# documents(first: 50): the newest first.
DOCUMENTS_NEWEST = (
    f"SELECT {DOCUMENT_COLUMNS} \nFROM documents \nWHERE "
    + VISIBLE.format(classes="$3, $4, $5")
    + " ORDER BY documents.created_at DESC, documents.id DESC \n LIMIT $2::INTEGER"
)

# documents(first: 20, filter: {processingStatus, documentType, riskLevel}, orderBy: FILENAME)
DOCUMENTS_FILTERED = (
    f"SELECT {DOCUMENT_COLUMNS} \nFROM documents \nWHERE "
    + VISIBLE.format(classes="$3, $4, $5")
    + " AND documents.processing_status IN ($6) AND documents.document_type IN ($7) "
    "AND documents.risk_level IN ($8) ORDER BY documents.filename ASC, documents.id ASC \n"
    " LIMIT $2::INTEGER"
)
DOCUMENTS_FILTERED_COUNT = (
    "SELECT count(*) AS count_1 \nFROM (SELECT documents.id AS id \nFROM documents \nWHERE "
    + VISIBLE.format(classes="$2, $3, $4")
    + " AND documents.processing_status IN ($5) AND documents.document_type IN ($6) "
    "AND documents.risk_level IN ($7)) AS anon_1"
)


def documents_by_ids(count: int) -> str:
    return (
        f"SELECT {DOCUMENT_COLUMNS} \nFROM documents \nWHERE "
        + VISIBLE.format(classes="$2, $3, $4")
        + f" AND documents.id IN {_in(5, count, '::UUID')}"
    )


def window_pages(table: str, names: str, order: str, parents: int) -> str:
    """``prism.models.pagination.window_pages``: one page per parent document, by row_number."""
    outer = ", ".join(f"anon_1.{n}" for n in names.split())
    inner = ", ".join(f"{table}.{n} AS {n}" for n in names.split())
    return (
        f"SELECT {outer} \nFROM (SELECT {inner}, row_number() OVER (PARTITION BY "
        f"{table}.document_id ORDER BY {order}) AS rn \nFROM {table} JOIN documents ON "
        f"documents.id = {table}.document_id \nWHERE "
        + VISIBLE.format(classes="$3, $4, $5")
        + f" AND {table}.document_id IN {_in(6, parents, '::UUID')}) AS anon_1 \n"
        "WHERE anon_1.rn <= $2::INTEGER ORDER BY anon_1.document_id, anon_1.rn"
    )


def section_pages(parents: int) -> str:
    order = "document_sections.ord ASC, document_sections.id ASC"
    return window_pages("document_sections", SECTION_NAMES, order, parents)


def analysis_pages(parents: int) -> str:
    order = "analysis_results.created_at ASC, analysis_results.id ASC"
    return window_pages("analysis_results", ANALYSIS_NAMES, order, parents)


def feedback_pages(parents: int) -> str:
    order = "user_feedback.created_at ASC, user_feedback.id ASC"
    return window_pages("user_feedback", FEEDBACK_NAMES, order, parents)


def users_by_ids(count: int) -> str:
    return (
        f"SELECT {USER_COLUMNS} \nFROM users \nWHERE users.organization_id = $1::UUID "
        f"AND users.id IN {_in(2, count, '::UUID')}"
    )


def tokens_by_ids(count: int) -> str:
    return (
        f"SELECT {TOKEN_COLUMNS} \nFROM api_tokens \nWHERE api_tokens.organization_id = "
        f"$1::UUID AND api_tokens.id IN {_in(2, count, '::UUID')}"
    )


ORGANIZATION = (
    "SELECT organizations.id AS organizations_id, organizations.name AS organizations_name, "
    "organizations.domain AS organizations_domain, organizations.subscription_tier AS "
    "organizations_subscription_tier, organizations.data_retention_days AS "
    "organizations_data_retention_days, organizations.data_version AS "
    "organizations_data_version, organizations.created_at AS organizations_created_at, "
    "organizations.updated_at AS organizations_updated_at \nFROM organizations \n"
    "WHERE organizations.id = $1::UUID"
)

# Authentication, once per token (Prism: every request).
TOKEN_LOOKUP = "SELECT token_id, organization_id \nFROM prism_api_token_lookup($1::BYTEA) AS anon_1"
TOKEN_BY_ID = f"SELECT {TOKEN_COLUMNS} \nFROM api_tokens \nWHERE api_tokens.id = $1::UUID"
USER_BY_ID = f"SELECT {USER_COLUMNS} \nFROM users \nWHERE users.id = $1::UUID"

# Page sizes and filters of the benchmark's queries (bench/perf/queries.py).
NESTED_DOCUMENTS, NESTED_SECTIONS = 50, 5
NODE_ANALYSES, NODE_FEEDBACK = 10, 10
FILTERED_FIRST = 20
FILTER = ("COMPLETED", "CONTRACT", "HIGH")  # processing_status, document_type, risk_level


# --- the server --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    organization_id: uuid.UUID
    user_id: uuid.UUID | None
    api_token_id: uuid.UUID
    classes: tuple[str, ...]  # the classifications the principal may read


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def global_id(type_name: str, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{type_name}:{row_id}".encode()).decode().rstrip("=")


def document_id_of(global_or_uuid: str) -> uuid.UUID:
    try:
        raw = base64.urlsafe_b64decode(global_or_uuid + "=" * (-len(global_or_uuid) % 4))
        type_name, _, row_id = raw.decode().partition(":")
        if type_name != "Document":
            raise ValueError(type_name)
        return uuid.UUID(row_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(200, "NOT_FOUND", "Document not found.") from exc


async def _no_reset(conn: asyncpg.Connection) -> None:
    return None


@dataclass
class Statement:
    """One chosen statement of the physical limit."""

    source: str
    sql: str
    args: list[Any]
    shape: str


class Raw:
    def __init__(self) -> None:
        self.statements: dict[str, Statement] = {}
        self.pool: asyncpg.Pool | None = None
        self.principals: dict[str, Principal] = {}
        self.expected_tokens: dict[str, str] = orjson.loads(os.environ.get("BENCH_TOKENS", "{}"))

    async def start(self) -> None:
        self.pool = await asyncpg.create_pool(
            os.environ["BENCH_DATABASE_URL"],
            min_size=10,
            max_size=10,
            server_settings={
                "role": APP_ROLE,
                "application_name": "bench-raw",
                "statement_timeout": "15000",
            },
            # Everything a request sets is transaction-local: a connection comes back clean,
            # and asyncpg's default reset query would cost a round trip per request.
            reset=_no_reset,
        )
        if PLAN is not None:
            from bench.perf.limit import typed_args

            plan = PLAN
            async with self.pool.acquire() as conn:
                for name, chosen in plan["queries"].items():
                    args = await typed_args(conn, chosen["sql"], chosen["args"])
                    self.statements[name] = Statement(
                        chosen["source"], chosen["sql"], args, chosen["shape"]
                    )

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    @asynccontextmanager
    async def read(self, principal: Principal) -> AsyncIterator[Any]:
        assert self.pool is not None
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            await conn.execute(SET_ORG, "prism.org_id", str(principal.organization_id), True)
            yield conn

    async def principal(self, request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Refused(401, "UNAUTHENTICATED", "Use `Authorization: Bearer <token>`.")
        found = self.principals.get(token)
        if found is None:
            found = await self._authenticate(token)
            self.principals[token] = found
        return found

    async def _authenticate(self, token: str) -> Principal:
        assert self.pool is not None
        digest = hashlib.sha256(token.encode()).digest()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(SET_ORG, "prism.org_id", "", True)
            row = await conn.fetchrow(TOKEN_LOOKUP, digest)
            if row is None:
                raise Refused(401, "UNAUTHENTICATED", "The API token is invalid.")
            await conn.execute(SET_ORG, "prism.org_id", str(row["organization_id"]), True)
            api_token = await conn.fetchrow(TOKEN_BY_ID, row["token_id"])
            clearance, user_id = api_token["clearance"], api_token["user_id"]
            if user_id is not None:
                user = await conn.fetchrow(USER_BY_ID, user_id)
                clearance = user["clearance"]
        if str(api_token["id"]) != self.expected_tokens.get(token, str(api_token["id"])):
            raise Refused(401, "UNAUTHENTICATED", "Not the benchmark's token.")
        rank = CLEARANCES.index(clearance)
        if not CLEARANCES.index("CONFIDENTIAL") <= rank < CLEARANCES.index("RESTRICTED"):
            raise Refused(403, "FORBIDDEN", "The raw server serves CONFIDENTIAL clearance only.")
        return Principal(
            organization_id=row["organization_id"],
            user_id=user_id,
            api_token_id=api_token["id"],
            classes=CLEARANCES[: rank + 1],
        )

    async def physical(self, principal: Principal, statement: Statement) -> bytes:
        """The answer (the whole response body) from the one chosen statement."""
        async with self.read(principal) as conn:
            if statement.shape == "prism-json":
                text = await conn.fetchval(statement.sql, *statement.args)
                return b'{"data":' + text.encode() + b"}"
            rows = await conn.fetch(statement.sql, *statement.args)
        return orjson.dumps({"data": SHAPES[statement.shape](rows)})

    # --- the four queries ----------------------------------------------------------------------

    async def nested(self, principal: Principal, variables: dict[str, Any]) -> Any:
        org = principal.organization_id
        async with self.read(principal) as conn:
            documents = await conn.fetch(
                DOCUMENTS_NEWEST, org, NESTED_DOCUMENTS + 1, *principal.classes
            )
            documents = documents[:NESTED_DOCUMENTS]
            ids = [d["id"] for d in documents]
            sections = await conn.fetch(
                section_pages(len(ids)), org, NESTED_SECTIONS + 1, *principal.classes, *ids
            )
        by_document: dict[uuid.UUID, list[Any]] = {i: [] for i in ids}
        for s in sections:
            by_document[s["document_id"]].append(s)
        edges = [
            {
                "node": {
                    "id": global_id("Document", d["id"]),
                    "filename": d["filename"],
                    "sections": {
                        "edges": [
                            {"node": {"id": global_id("Section", s["id"]), "order": s["ord"]}}
                            for s in by_document[d["id"]][:NESTED_SECTIONS]
                        ]
                    },
                }
            }
            for d in documents
        ]
        return {"documents": {"edges": edges}}

    async def node(self, principal: Principal, variables: dict[str, Any]) -> Any:
        document_id = document_id_of(str(variables.get("id", "")))
        org, classes = principal.organization_id, principal.classes
        async with self.read(principal) as conn:
            document = await conn.fetchrow(documents_by_ids(1), org, *classes, document_id)
            if document is None:
                raise Refused(200, "NOT_FOUND", "Document not found.")
            analyses = await conn.fetch(
                analysis_pages(1), org, NODE_ANALYSES + 1, *classes, document_id
            )
            feedback = await conn.fetch(
                feedback_pages(1), org, NODE_FEEDBACK + 1, *classes, document_id
            )
            feedback = feedback[:NODE_FEEDBACK]
            author_ids = list(dict.fromkeys(f["user_id"] for f in feedback if f["user_id"]))
            authors = {
                u["id"]: u
                for u in (
                    await conn.fetch(users_by_ids(len(author_ids)), org, *author_ids)
                    if author_ids
                    else []
                )
            }

        def author(user_id: uuid.UUID | None) -> Any:
            user = authors.get(user_id) if user_id else None
            return {"id": global_id("User", user["id"]), "email": user["email"]} if user else None

        return {
            "node": {
                "id": global_id("Document", document["id"]),
                "filename": document["filename"],
                "analyses": {
                    "edges": [
                        {
                            "node": {
                                "id": global_id("Analysis", a["id"]),
                                "riskLevel": a["risk_level"],
                                "feedbackItems": [
                                    {
                                        "id": str(item["id"]),
                                        "category": item["category"],
                                        "riskLevel": item["riskLevel"],
                                    }
                                    for item in orjson.loads(a["feedback_items"])
                                ],
                            }
                        }
                        for a in analyses[:NODE_ANALYSES]
                    ]
                },
                "feedback": {
                    "edges": [
                        {
                            "node": {
                                "id": global_id("Feedback", f["id"]),
                                "action": f["action"],
                                "author": author(f["user_id"]),
                            }
                        }
                        for f in feedback
                    ]
                },
            }
        }

    async def filtered(self, principal: Principal, variables: dict[str, Any]) -> Any:
        org, classes = principal.organization_id, principal.classes
        async with self.read(principal) as conn:
            rows = await conn.fetch(DOCUMENTS_FILTERED, org, FILTERED_FIRST + 1, *classes, *FILTER)
            total = await conn.fetchval(DOCUMENTS_FILTERED_COUNT, org, *classes, *FILTER)
        return {
            "documents": {
                "totalCount": total,
                "edges": [
                    {
                        "node": {
                            "id": global_id("Document", d["id"]),
                            "filename": d["filename"],
                            "processingStatus": d["processing_status"],
                            "riskLevel": d["risk_level"],
                            "wordCount": d["word_count"],
                        }
                    }
                    for d in rows[:FILTERED_FIRST]
                ],
            }
        }

    async def viewer(self, principal: Principal, variables: dict[str, Any]) -> Any:
        org = principal.organization_id
        async with self.read(principal) as conn:
            organization = await conn.fetchrow(ORGANIZATION, org)
            user = (
                await conn.fetchrow(users_by_ids(1), org, principal.user_id)
                if principal.user_id
                else None
            )
            token = await conn.fetchrow(tokens_by_ids(1), org, principal.api_token_id)
        return {
            "viewer": {
                "scopes": list(SCOPES),
                "organization": {
                    "id": global_id("Organization", organization["organizations_id"]),
                    "name": organization["organizations_name"],
                },
                "user": {
                    "id": global_id("User", user["id"]),
                    "email": user["email"],
                    "role": user["role"],
                }
                if user
                else None,
                "apiToken": {"id": global_id("ApiToken", token["id"]), "name": token["name"]}
                if token
                else None,
            }
        }


# The physical limit's statements (limit.py), read once when the module loads.
PLAN_FILE = os.environ.get("BENCH_LIMIT_PLAN")
PLAN: Any = orjson.loads(Path(PLAN_FILE).read_bytes()) if PLAN_FILE else None


# --- PostGraphile's rows as Prism's answers ---------------------------------------------------


def _parsed(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def text_array(literal: str | None) -> list[Any]:
    """PostgreSQL's text form of a (nested) text[] (PostGraphile 5 selects its nested lists
    as ``array(...)::text``): lists of str / None."""
    if not literal:
        return []
    stack: list[list[Any]] = []
    top: list[Any] = []
    i, n = 0, len(literal)
    while i < n:
        c = literal[i]
        if c == "{":
            stack.append([])
            i += 1
        elif c == "}":
            done = stack.pop()
            if stack:
                stack[-1].append(done)
            else:
                top = done
            i += 1
        elif c == ",":
            i += 1
        elif c == '"':
            i += 1
            chars = []
            while literal[i] != '"':
                if literal[i] == "\\":
                    i += 1
                chars.append(literal[i])
                i += 1
            stack[-1].append("".join(chars))
            i += 1
        else:
            j = i
            while literal[j] not in ",}":
                j += 1
            word = literal[i:j]
            stack[-1].append(None if word == "NULL" else word)
            i = j
    return top


def _section(section_id: Any, order: Any) -> Any:
    return {"node": {"id": global_id("Section", section_id), "order": int(order)}}


def _items(items: Any) -> list[Any]:
    return [
        {"id": str(i["id"]), "category": i["category"], "riskLevel": i["riskLevel"]}
        for i in _parsed(items)
    ]


def _analysis(analysis_id: Any, risk: Any, items: Any) -> Any:
    return {
        "node": {
            "id": global_id("Analysis", analysis_id),
            "riskLevel": risk,
            "feedbackItems": _items(items),
        }
    }


def _feedback(feedback_id: Any, action: Any, user_id: Any, email: Any) -> Any:
    author = {"id": global_id("User", user_id), "email": email} if user_id else None
    return {"node": {"id": global_id("Feedback", feedback_id), "action": action, "author": author}}


def _nested(documents: list[tuple[Any, Any, list[tuple[Any, Any]]]]) -> Any:
    return {
        "documents": {
            "edges": [
                {
                    "node": {
                        "id": global_id("Document", d),
                        "filename": filename,
                        "sections": {"edges": [_section(s, o) for s, o in sections]},
                    }
                }
                for d, filename, sections in documents
            ]
        }
    }


def _node(document: Any, filename: Any, analyses: list[Any], feedback: list[Any]) -> Any:
    return {
        "node": {
            "id": global_id("Document", document),
            "filename": filename,
            "analyses": {"edges": [_analysis(*a) for a in analyses]},
            "feedback": {"edges": [_feedback(*f) for f in feedback]},
        }
    }


def _filtered(total: Any, documents: list[Any]) -> Any:
    return {
        "documents": {
            "totalCount": int(total),
            "edges": [
                {
                    "node": {
                        "id": global_id("Document", d["id"]),
                        "filename": d["filename"],
                        "processingStatus": d["processingStatus"],
                        "riskLevel": d["riskLevel"],
                        "wordCount": d["wordCount"],
                    }
                }
                for d in documents
            ],
        }
    }


def _v4_nodes(data: Any) -> list[Any]:
    return [n["@nodes"] for n in _parsed(data)]


def pg4_nested(rows: list[Any]) -> Any:
    return _nested(
        [
            (
                d["id"],
                d["filename"],
                [
                    (s["id"], s["ord"])
                    for s in _v4_nodes(d["@documentSectionsByDocumentId"]["data"])
                ],
            )
            for d in _v4_nodes(rows[0]["data"])
        ]
    )


def pg4_node(rows: list[Any]) -> Any:
    row = rows[0]
    analyses = _v4_nodes(_parsed(row["@analysisResultsByDocumentId"])["data"])
    feedback = _v4_nodes(_parsed(row["@userFeedbacksByDocumentId"])["data"])
    return _node(
        _parsed(row["id"]),
        _parsed(row["filename"]),
        [(a["id"], a["riskLevel"], a["feedbackItems"]) for a in analyses],
        [
            (
                f["id"],
                f["action"],
                (f["@userByUserId"] or {}).get("id"),
                (f["@userByUserId"] or {}).get("email"),
            )
            for f in feedback
        ],
    )


def pg4_filtered(rows: list[Any]) -> Any:
    row = rows[0]
    return _filtered(_parsed(row["aggregates"])["totalCount"], _v4_nodes(row["data"]))


def pg5_nested(rows: list[Any]) -> Any:
    return _nested([(r[0], r[1], text_array(r[2])) for r in rows])


def pg5_node(rows: list[Any]) -> Any:
    r = rows[0]
    return _node(r[0], r[1], text_array(r[2]), text_array(r[3]))


# PostGraphile's rows of one statement -> Prism's answer, by "<server>:<operation>": the
# Python work the limit does on top of PostgreSQL's for PostGraphile's statements.
SHAPES: dict[str, Any] = {
    "postgraphile:Nested": pg4_nested,
    "postgraphile:Node": pg4_node,
    "postgraphile:Filtered": pg4_filtered,
    "postgraphile5:Nested": pg5_nested,
    "postgraphile5:Node": pg5_node,
}


raw = Raw()
HANDLERS = {
    "Nested": raw.nested,
    "Node": raw.node,
    "Filtered": raw.filtered,
    "Viewer": raw.viewer,
}


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


async def graphql(request: Request) -> Response:
    try:
        principal = await raw.principal(request)
        body = orjson.loads(await request.body())
        statement = raw.statements.get(body.get("operationName") or "")
        if statement is not None:
            return Response(await raw.physical(principal, statement), media_type="application/json")
        handler = HANDLERS.get(body.get("operationName") or "")
        if handler is None:
            raise Refused(400, "BAD_USER_INPUT", "Unknown operation (the raw server has four).")
        data = await handler(principal, body.get("variables") or {})
    except Refused as refused:
        error = {"message": refused.message, "extensions": {"code": refused.code}}
        return _json({"data": None, "errors": [error]}, refused.status)
    return _json({"data": data})


async def healthz(request: Request) -> Response:
    return _json({"status": "ok"})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await raw.start()
    try:
        yield
    finally:
        await raw.stop()


app = Starlette(
    routes=[Route("/graphql", graphql, methods=["POST"]), Route("/healthz", healthz)],
    lifespan=lifespan,
)
