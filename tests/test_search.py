"""Search, one suite over both backends (PostgreSQL full-text search and a real OpenSearch
node): same hits, highlights, facets, cursors, filters, and visibility exactly as the access
policy says, including through index jobs after changes; plus bad input."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa

from prism.authz.policy import Resource, can_see
from prism.authz.principal import Principal
from prism.config import Settings
from prism.models.documents import Document
from prism.models.enums import Classification, DocumentType, JobState, Role
from prism.models.jobs import Job
from prism.search import SearchRequest, mandatory_filter
from prism.services import Services
from tests.factories import Tenant, add_document, add_user, codes, gid, gql, make_tenant
from tests.search_helpers import Stack, opensearch_settings, running

BACKENDS = ["postgres", "opensearch"]


def section_text(title: str, *sections: tuple[str, str]) -> str:
    return (
        title + "\n\n" + "\n\n".join(f"{i}. {h}\n{body}" for i, (h, body) in enumerate(sections, 1))
    )


@dataclass
class Doc:
    row: Document
    liability: bool  # holds the word "liability" somewhere
    renewal: bool


@dataclass
class Corpus:
    a: Tenant
    b: Tenant
    docs: list[Doc] = field(default_factory=list)
    # role -> (principal-like facts, token)
    tokens: dict[str, str] = field(default_factory=dict)
    principals: dict[str, Principal] = field(default_factory=dict)


RENEWAL_DOCS = 12


async def _corpus(services: Services) -> Corpus:
    a = await make_tenant(services)
    b = await make_tenant(services)
    corpus = Corpus(a=a, b=b)

    async def add(
        tenant: Tenant, text: str, *, liability: bool, renewal: bool, **kw: object
    ) -> None:
        row = await add_document(services, tenant, text=text, **kw)  # type: ignore[arg-type]
        corpus.docs.append(Doc(row=row, liability=liability, renewal=renewal))

    await add(
        a,
        section_text(
            "MASTER AGREEMENT",
            (
                "Liability",
                "The supplier accepts unlimited liability. Contact jane.doe@example.com.",
            ),
            ("Termination", "Either party may terminate at any time at its sole discretion."),
        ),
        liability=True,
        renewal=False,
        classification=Classification.INTERNAL,
    )
    await add(
        a,
        section_text(
            "PRIVACY POLICY",
            ("Scope", "This policy describes the indemnification of partners."),
            ("Limits", "Our liability is limited to the fees paid."),
        ),
        liability=True,
        renewal=False,
        classification=Classification.PUBLIC,
        document_type=DocumentType.POLICY,
    )
    await add(
        a,
        section_text("QUARTERLY REPORT", ("Summary", "Liability reserves were increased.")),
        liability=True,
        renewal=False,
        classification=Classification.CONFIDENTIAL,
        document_type=DocumentType.REPORT,
    )
    await add(
        a,
        section_text("BOARD MINUTES", ("Litigation", "The board discussed liability in court.")),
        liability=True,
        renewal=False,
        classification=Classification.RESTRICTED,
        department="legal",
    )
    await add(
        a,
        section_text("SALARY REVIEW", ("Compensation", "Liability for unpaid bonuses was noted.")),
        liability=True,
        renewal=False,
        classification=Classification.RESTRICTED,
        department="hr",
    )
    for i in range(RENEWAL_DOCS):
        await add(
            a,
            section_text(
                f"SUBSCRIPTION {i}",
                ("Renewal", f"The subscription renewal happens every year for plan {i}."),
                ("Fees", f"Fees for plan {i} are due within thirty days of the renewal."),
            ),
            liability=False,
            renewal=True,
            classification=[Classification.PUBLIC, Classification.INTERNAL][i % 2],
            document_type=[DocumentType.CONTRACT, DocumentType.POLICY, DocumentType.OTHER][i % 3],
        )
    await add(
        b,
        section_text("OTHER ORG", ("Liability", "Unlimited liability and yearly renewal here.")),
        liability=True,
        renewal=True,
        classification=Classification.PUBLIC,
    )
    # Callers: every role of A (department legal), plus RESTRICTED approvers of two departments.
    for role in Role:
        corpus.tokens[role.value] = a.tokens[role]
        user = a.users[role]
        corpus.principals[role.value] = Principal(
            organization_id=a.org_id,
            user_id=user.id,
            api_token_id=None,
            role=role,
            clearance=user.clearance,
            department=user.department,
            scopes=None,
        )
    for department in ("legal", "hr"):
        user, token = await add_user(
            services,
            a,
            role=Role.APPROVER,
            clearance=Classification.RESTRICTED,
            department=department,
        )
        name = f"RESTRICTED-{department}"
        corpus.tokens[name] = token
        corpus.principals[name] = Principal(
            organization_id=a.org_id,
            user_id=user.id,
            api_token_id=None,
            role=Role.APPROVER,
            clearance=Classification.RESTRICTED,
            department=department,
            scopes=None,
        )
    return corpus


@pytest.fixture(scope="module")
async def corpus(services: Services) -> Corpus:
    return await _corpus(services)


@pytest.fixture(scope="module")
async def pg_stack(
    settings: Settings, database_url: str, services: Services, corpus: Corpus
) -> AsyncIterator[Stack]:
    async with running(settings, database_url, "postgres") as stack:
        yield stack


@pytest.fixture(scope="module")
async def os_stack(
    settings: Settings, database_url: str, opensearch_url: str, corpus: Corpus
) -> AsyncIterator[Stack]:
    async with running(
        opensearch_settings(settings, opensearch_url), database_url, "opensearch"
    ) as stack:
        await stack.index([d.row for d in corpus.docs])
        yield stack


@pytest.fixture(params=BACKENDS)
def stack(request: pytest.FixtureRequest) -> Stack:
    return request.getfixturevalue("pg_stack" if request.param == "postgres" else "os_stack")  # type: ignore[no-any-return]


def visible(
    corpus: Corpus, who: str, *, liability: bool = False, renewal: bool = False
) -> set[str]:
    principal = corpus.principals[who]
    return {
        gid("Document", d.row.id)
        for d in corpus.docs
        if (d.liability if liability else d.renewal)
        and can_see(
            principal,
            Resource(
                organization_id=d.row.organization_id,
                kind="Document",
                classification=d.row.classification,
                department=d.row.department,
            ),
        )
    }


def documents_of(edges: list[dict]) -> set[str]:  # type: ignore[type-arg]
    return {e["node"]["document"]["id"] for e in edges}


# --- visibility ---------------------------------------------------------------------------------


@pytest.mark.parametrize("who", [*(r.value for r in Role), "RESTRICTED-legal", "RESTRICTED-hr"])
async def test_hits_are_exactly_what_the_caller_may_read(
    stack: Stack, corpus: Corpus, who: str
) -> None:
    # when each kind of caller searches a word every test document holds
    edges = await stack.search_all(corpus.tokens[who], "liability")
    # then they see exactly the documents the access policy lets them read: never another
    # organization's, never above their clearance, RESTRICTED only in their own department
    assert documents_of(edges) == visible(corpus, who, liability=True)
    assert gid(
        "Document", next(d.row.id for d in corpus.docs if d.row.organization_id == corpus.b.org_id)
    ) not in documents_of(edges)


async def test_the_mandatory_filter_agrees_with_the_policy_for_every_principal(
    stack: Stack, services: Services
) -> None:
    # given a document of every classification in three departments, with a word of its own
    tenant = await make_tenant(services)
    word = f"grid{uuid.uuid4().hex[:8]}"
    grid = []
    for classification, department in itertools.product(Classification, ["legal", "hr", None]):
        grid.append(
            await add_document(
                services,
                tenant,
                text=section_text("GRID", ("Clause", f"The {word} clause applies.")),
                classification=classification,
                department=department,
            )
        )
    await stack.index(grid)
    # when every kind of principal asks the backend directly
    for role, clearance, department, own_org in itertools.product(
        [Role.VIEWER, Role.APPROVER, Role.ADMIN],
        Classification,
        ["legal", "hr", None],
        [True, False],
    ):
        principal = Principal(
            organization_id=tenant.org_id if own_org else uuid.uuid4(),
            user_id=None,
            api_token_id=None,
            role=role,
            clearance=clearance,
            department=department,
            scopes=None,
        )
        request = SearchRequest.parse(word, first=100)
        page = await stack.services.search.primary.search(
            mandatory_filter(principal.scope()), request
        )
        # then the backend returns what can_see allows, no more and no less
        expected = {
            d.id
            for d in grid
            if can_see(
                principal,
                Resource(tenant.org_id, "Document", d.classification, d.department),
            )
        }
        assert {h.document_id for h in page.hits} == expected, (
            role,
            clearance,
            department,
            own_org,
        )
        assert page.total_count == len(expected)


# --- results --------------------------------------------------------------------------------------


async def test_highlights_hold_the_terms_and_pii_stays_masked(stack: Stack, corpus: Corpus) -> None:
    body = await stack.search(corpus.tokens["ADMIN"], '"unlimited liability"')
    assert body.get("errors") is None, body
    edges = body["data"]["search"]["edges"]
    assert len(edges) == 1
    hit = edges[0]["node"]
    assert hit["highlights"], hit
    assert all("<em>" in h for h in hit["highlights"])
    joined = " ".join(hit["highlights"]).lower()
    assert "<em>unlimited</em>" in joined
    assert "<em>liability</em>" in joined
    # the index holds masked text only: the highlight shows [EMAIL] even to an ADMIN, whose
    # section content shows the address
    assert "[EMAIL]" in " ".join(hit["highlights"]) or "jane.doe" not in joined
    assert "jane.doe@example.com" not in joined
    assert "jane.doe@example.com" in hit["section"]["content"]
    # nobody finds a section by a personal value
    by_pii = await stack.search(corpus.tokens["ADMIN"], "jane.doe@example.com")
    assert by_pii["data"]["search"]["totalCount"] == 0


async def test_facets_and_total_count_the_visible_hits(stack: Stack, corpus: Corpus) -> None:
    body = await stack.search(corpus.tokens["VIEWER"], "renewal", first=3)
    assert body.get("errors") is None, body
    result = body["data"]["search"]
    mine = [d for d in corpus.docs if d.renewal and d.row.organization_id == corpus.a.org_id]
    # each renewal document has two sections that match ("Renewal" and "Fees … renewal")
    assert result["totalCount"] == 2 * len(mine)
    facets = {f["field"]: {b["value"]: b["count"] for b in f["buckets"]} for f in result["facets"]}
    expected_classes: dict[str, int] = {}
    expected_types: dict[str, int] = {}
    for d in mine:
        expected_classes[d.row.classification.value] = (
            expected_classes.get(d.row.classification.value, 0) + 2
        )
        expected_types[d.row.document_type.value] = (
            expected_types.get(d.row.document_type.value, 0) + 2
        )
    assert facets["classification"] == expected_classes
    assert facets["documentType"] == expected_types
    assert sum(facets["riskLevel"].values()) <= result["totalCount"]
    assert [f["field"] for f in result["facets"]] == ["classification", "documentType", "riskLevel"]


async def test_cursors_page_without_gaps_or_repeats(stack: Stack, corpus: Corpus) -> None:
    token = corpus.tokens["ADMIN"]
    everything = await stack.search(token, "renewal OR liability", first=100)
    all_ids = [e["node"]["section"]["id"] for e in everything["data"]["search"]["edges"]]
    assert len(all_ids) == everything["data"]["search"]["totalCount"] > 20
    paged = await stack.search_all(token, "renewal OR liability", page=4)
    ids = [e["node"]["section"]["id"] for e in paged]
    assert ids == all_ids  # same order, nothing missing, nothing twice
    scores = [e["node"]["score"] for e in paged]
    assert scores == sorted(scores, reverse=True)


async def test_filters_narrow_within_the_visible(stack: Stack, corpus: Corpus) -> None:
    token = corpus.tokens["ADMIN"]
    public = await stack.search_all(token, "renewal", f={"classification": ["PUBLIC"]})
    assert public
    assert {e["node"]["document"]["classification"] for e in public} == {"PUBLIC"}
    one = next(d for d in corpus.docs if d.renewal and d.row.organization_id == corpus.a.org_id)
    only = await stack.search_all(token, "renewal", f={"documentId": gid("Document", one.row.id)})
    assert documents_of(only) == {gid("Document", one.row.id)}
    # another organization's document id finds nothing
    theirs = next(d for d in corpus.docs if d.row.organization_id == corpus.b.org_id)
    none = await stack.search(token, "renewal", f={"documentId": gid("Document", theirs.row.id)})
    assert none["data"]["search"]["totalCount"] == 0


async def test_query_syntax(stack: Stack, corpus: Corpus) -> None:
    token = corpus.tokens["ADMIN"]
    both = documents_of(await stack.search_all(token, "liability -litigation"))
    assert gid("Document", corpus.docs[3].row.id) not in both  # board minutes mention litigation
    assert gid("Document", corpus.docs[0].row.id) in both
    either = documents_of(await stack.search_all(token, "indemnification OR litigation"))
    assert either == {
        gid("Document", corpus.docs[1].row.id),
        gid("Document", corpus.docs[3].row.id),
    }
    stop_words = await stack.search(token, "the of and")
    assert stop_words["data"]["search"]["totalCount"] == 0


async def test_both_backends_find_the_same_sections(
    pg_stack: Stack, os_stack: Stack, corpus: Corpus
) -> None:
    token = corpus.tokens["ADMIN"]
    for query in [
        "liability",
        "renewal",
        '"unlimited liability"',
        "fees -plan",
        "court OR bonuses",
    ]:
        pg = [e["node"]["section"]["id"] for e in await pg_stack.search_all(token, query)]
        found = [e["node"]["section"]["id"] for e in await os_stack.search_all(token, query)]
        assert set(pg) == set(found), query
        top = min(5, len(pg))
        # rankings differ (ts_rank vs BM25); the best hits mostly agree
        assert len(set(pg[:top]) & set(found[:top])) >= top // 2, query


# --- changes reach the index through jobs -----------------------------------------------------


UPDATE = """mutation($input: UpdateDocumentInput!) {
  updateDocument(input: $input) { id classification }
}"""
DELETE = """mutation($id: ID!) { deleteDocument(id: $id) { deletedId } }"""


async def _backend_sees(stack: Stack, principal: Principal, word: str) -> set[uuid.UUID]:
    page = await stack.services.search.primary.search(
        mandatory_filter(principal.scope()), SearchRequest.parse(word, first=100)
    )
    return {h.document_id for h in page.hits}


async def test_reclassification_and_deletion_reach_the_index(
    stack: Stack, services: Services, corpus: Corpus
) -> None:
    word = f"zebra{uuid.uuid4().hex[:8]}"
    document = await add_document(
        services, corpus.a, text=section_text("NOTE", ("Animals", f"A {word} was seen."))
    )
    await stack.index([document])
    viewer, admin = corpus.principals["VIEWER"], corpus.principals["ADMIN"]
    assert await _backend_sees(stack, viewer, word) == {document.id}
    # when an ADMIN raises the classification above the viewer's clearance
    body = await gql(
        stack.client,
        UPDATE,
        {"input": {"id": gid("Document", document.id), "classification": "CONFIDENTIAL"}},
        token=corpus.tokens["ADMIN"],
    )
    assert body.get("errors") is None, body
    # then the GraphQL answer hides it at once (hits are re-read with the caller's scope) ...
    hidden = await stack.search(corpus.tokens["VIEWER"], word)
    assert hidden["data"]["search"]["totalCount"] in (0, 1)
    assert hidden["data"]["search"]["edges"] == []
    async with services.db.transaction(corpus.a.org_id) as session:
        kinds = list(
            await session.scalars(
                sa.select(Job.kind).where(Job.payload["documentId"].astext == str(document.id))
            )
        )
    if stack.name == "opensearch":
        # ... and the index itself after the index job, queued with the change, has run
        assert "search.index" in kinds
        assert await _backend_sees(stack, viewer, word) == {document.id}
    else:
        assert "search.index" not in kinds  # PostgreSQL's index needs no job
    await stack.run_jobs()
    assert await _backend_sees(stack, viewer, word) == set()
    assert await _backend_sees(stack, admin, word) == {document.id}
    again = await stack.search(corpus.tokens["VIEWER"], word)
    assert again["data"]["search"]["totalCount"] == 0
    # when the document is deleted
    body = await gql(
        stack.client, DELETE, {"id": gid("Document", document.id)}, token=corpus.tokens["ADMIN"]
    )
    assert body.get("errors") is None, body
    await stack.run_jobs()
    # then nobody finds it any more
    assert await _backend_sees(stack, admin, word) == set()
    gone = await stack.search(corpus.tokens["ADMIN"], word)
    assert gone["data"]["search"]["totalCount"] == 0
    async with services.db.transaction(corpus.a.org_id) as session:
        states = set(
            await session.scalars(
                sa.select(Job.state).where(
                    Job.kind == "search.index", Job.payload["documentId"].astext == str(document.id)
                )
            )
        )
    assert states <= {JobState.SUCCEEDED}


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "argument", "message"),
    [
        ({"q": ""}, "query", "must not be empty"),
        ({"q": "   "}, "query", "must not be empty"),
        ({"q": "x" * 501}, "query", "at most 500"),
        ({"q": "a\x01b"}, "query", "control characters"),
        ({"q": "renewal", "first": 101}, "first", "between 0 and 100"),
        ({"q": "renewal", "first": -1}, "first", "between 0 and 100"),
        ({"q": "renewal", "after": "not-a-cursor"}, "after", "not a valid cursor"),
        ({"q": "renewal", "after": "WyJ4Il0"}, "after", "not a valid cursor"),
        (
            {"q": "renewal", "f": {"classification": ["PUBLIC"] * 11}},
            "filter.classification",
            "at most 10",
        ),
    ],
)
async def test_bad_input_is_refused_clearly(
    stack: Stack, corpus: Corpus, variables: dict[str, object], argument: str, message: str
) -> None:
    body = await gql(stack.client, SEARCH_Q, variables, token=corpus.tokens["ADMIN"])
    assert codes(body) == ["BAD_USER_INPUT"], body
    error = body["errors"][0]
    assert message in error["message"]
    assert error["extensions"]["argument"] == argument


SEARCH_Q = """query($q: String!, $f: SearchFilter, $first: Int, $after: String) {
  search(query: $q, filter: $f, first: $first, after: $after) { totalCount }
}"""


async def test_a_cursor_of_another_query_or_backend_is_refused(
    pg_stack: Stack, os_stack: Stack, corpus: Corpus
) -> None:
    token = corpus.tokens["ADMIN"]
    first = await pg_stack.search(token, "renewal", first=2)
    cursor = first["data"]["search"]["pageInfo"]["endCursor"]
    other_query = await pg_stack.search(token, "liability", first=2, after=cursor)
    assert codes(other_query) == ["BAD_USER_INPUT"]
    other_backend = await os_stack.search(token, "renewal", first=2, after=cursor)
    assert codes(other_backend) == ["BAD_USER_INPUT"]
    assert "another search backend" in other_backend["errors"][0]["message"]


async def test_search_needs_the_search_read_scope(
    pg_stack: Stack, services: Services, corpus: Corpus
) -> None:
    from prism.audit import OPERATOR
    from prism.tokens import api_tokens

    created = await api_tokens.create_token(
        services,
        OPERATOR,
        corpus.a.org_id,
        name="no search",
        scopes=["documents:read"],
        user_email=corpus.a.email(Role.ADMIN),
    )
    body = await pg_stack.search(created.secret, "renewal")
    assert codes(body) == ["FORBIDDEN"]
    assert "search:read" in body["errors"][0]["message"]
    anonymous = await pg_stack.search("", "renewal")
    assert codes(anonymous) == ["UNAUTHENTICATED"]


async def test_the_response_says_which_backend_answered(stack: Stack, corpus: Corpus) -> None:
    body = await stack.search(corpus.tokens["ADMIN"], "renewal", first=1)
    assert body["extensions"]["search"] == {"backend": stack.name}


async def test_matching_through_the_index_sees_only_the_current_organization(
    services: Services, corpus: Corpus
) -> None:
    # prism_match_sections runs as the owner (so the GIN index is usable under RLS): it must
    # still answer only for the organization set on the transaction, and nothing without one
    match = sa.text("SELECT count(*) FROM prism_match_sections('liability')")
    async with services.db.transaction(None) as session:
        assert await session.scalar(match) == 0
    async with services.db.transaction(corpus.b.org_id) as session:
        assert await session.scalar(match) == 1
    async with services.db.transaction(corpus.a.org_id) as session:
        mine = await session.scalar(match)
    assert mine == 5  # every "liability" section of A, before any visibility rule
