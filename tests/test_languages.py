"""Languages: documents and sections get the language they are written in, search analyses
each section in its language (PostgreSQL and OpenSearch), and the rules analyzer reads
German and French clauses; people's names never reach the PII-free search index."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from prism.analysis.rules import analyze_text
from prism.config import Settings
from prism.extraction.language import detect, detect_sections
from prism.models.enums import Role
from tests.factories import Tenant, make_tenant
from tests.pipeline_helpers import upload
from tests.search_helpers import Stack, opensearch_settings, running

BACKENDS = ["postgres", "opensearch"]

# "Haftungen" and "Verträge" only: German stemming (snowball in PostgreSQL, light_german in
# OpenSearch) conflates them with "Haftung" and "Vertrag"; English stemming does not.
GERMAN_CONTRACT = """RAHMENVERTRAG

1. Laufzeit
Dieser Vertrag beginnt am ersten Januar und verlängert sich automatisch um jeweils ein
weiteres Jahr, wenn er nicht drei Monate vor Ablauf schriftlich gekündigt wird.

2. Haftungen und Gewährleistung
Der Lieferant haftet unbeschränkt für alle Schäden, die aus der Verletzung wesentlicher
Pflichten entstehen. Die Haftungen beider Parteien für Folgeschäden bleiben davon unberührt.
Ansprechpartnerin ist Jane Doe, erreichbar unter +49 30 901820.

3. Schlussbestimmungen
Änderungen der Verträge bedürfen der Schriftform. Es gilt deutsches Recht.
"""
FRENCH_CONTRACT = """CONTRAT DE PRESTATION

1. Durée
Le présent contrat est conclu pour une durée d'un an. Il est renouvelé par reconduction
tacite pour des périodes successives d'un an, sauf dénonciation par lettre recommandée.

2. Responsabilité
Le prestataire accepte une responsabilité illimitée pour les dommages causés au client
dans le cadre de l'exécution des prestations prévues au présent contrat.
"""
DOCUMENT = """query($id: ID!) { document(id: $id) {
  processingStatus languageCode riskLevel
  sections(first: 20) { edges { node { name languageCode
    analyses { feedbackItems { id category } } } } }
} }"""


# --- detection ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Der Lieferant haftet unbeschränkt für alle Schäden aus diesem Vertrag.", "de"),
        ("Le prestataire accepte une responsabilité illimitée pour tous les dommages.", "fr"),
        ("The supplier accepts unlimited liability for all damages under this agreement.", "en"),
        ("El proveedor acepta una responsabilidad ilimitada por todos los daños.", "es"),
        ("12 34 56 -- 78", None),
    ],
)
def test_languages_are_detected_offline(text: str, language: str | None) -> None:
    assert detect(text) == language


def test_short_sections_take_their_documents_language() -> None:
    texts = [
        "Dieser Vertrag verlängert sich automatisch um ein weiteres Jahr, wenn er nicht "
        "gekündigt wird, und die Haftung des Lieferanten ist unbeschränkt.",
        "Payment: EUR 100",
    ]
    document, sections = detect_sections(texts)
    assert document == "de"
    assert sections == ["de", "de"]


def test_languages_from_the_extraction_child_are_checked() -> None:
    # The child parsed hostile input: what it says is data to check, not to trust.
    import orjson

    from prism.extraction.extract import Extracted

    def sent(language: object, languages: object) -> Extracted:
        return Extracted.from_json(
            orjson.dumps(
                {
                    "sections": [["a", "b"], ["c", "d"]],
                    "page_count": None,
                    "word_count": 2,
                    "findings": [[], []],
                    "language": language,
                    "languages": languages,
                }
            )
        )

    assert (sent("de", ["de", "fr"]).language, sent("de", ["de", "fr"]).languages) == (
        "de",
        ["de", "fr"],
    )
    assert sent("x" * 100, ["de", "' OR 1=1"]).language is None
    assert sent("de", ["de", "' OR 1=1"]).languages == ["de", None]
    assert sent("de", ["de"]).languages is None  # not one per section


# --- the rules analyzer ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Der Lieferant haftet unbeschränkt für alle Schäden.", "unlimited-liability"),
        ("Der Auftragnehmer haftet dem Kunden gegenüber unbegrenzt.", "unlimited-liability"),
        ("Die Haftung ist der Höhe nach nicht beschränkt.", "unlimited-liability"),
        ("Der Vertrag verlängert sich automatisch um ein Jahr.", "auto-renewal"),
        ("Er verlängert sich jeweils stillschweigend um zwölf Monate.", "auto-renewal"),
        ("Der Kunde stellt den Lieferanten von allen Ansprüchen frei.", "indemnity"),
        ("Le prestataire accepte une responsabilité illimitée.", "unlimited-liability"),
        ("Le contrat est renouvelé par reconduction tacite.", "auto-renewal"),
        ("Il est reconduit tacitement pour un an.", "auto-renewal"),
        ("Le client peut résilier le contrat à tout moment.", "unilateral-termination"),
        ("The supplier accepts unlimited liability.", "unlimited-liability"),
    ],
)
def test_rules_read_german_and_french_clauses(text: str, code: str) -> None:
    assert code in {item.id.rsplit("-", 1)[0] for item in analyze_text(text, []).items}


@pytest.mark.parametrize(
    "text",
    [
        "Die Haftung des Lieferanten ist auf den Auftragswert beschränkt.",
        "Der Vertrag endet nach einem Jahr, ohne dass er sich verlängert.",
        "La responsabilité du prestataire est limitée au montant du contrat.",
        "Le contrat n'est pas reconduit à son terme.",
    ],
)
def test_rules_leave_capped_or_fixed_terms_alone(text: str) -> None:
    codes = {item.id.rsplit("-", 1)[0] for item in analyze_text(text, []).items}
    assert not codes & {"unlimited-liability", "auto-renewal"}


# --- through the pipeline and both search backends ----------------------------------------------


@pytest.fixture(scope="module")
async def world(services: Any) -> Tenant:
    return await make_tenant(services)


@pytest.fixture(scope="module")
async def pg_stack(
    settings: Settings, database_url: str, services: Any, world: Tenant
) -> AsyncIterator[Stack]:
    async with running(settings, database_url, "postgres") as stack:
        yield stack


@pytest.fixture(scope="module")
async def os_stack(
    settings: Settings, database_url: str, opensearch_url: str, world: Tenant
) -> AsyncIterator[Stack]:
    async with running(
        opensearch_settings(settings, opensearch_url), database_url, "opensearch"
    ) as stack:
        yield stack


@pytest.fixture(params=BACKENDS)
def stack(request: pytest.FixtureRequest) -> Stack:
    return request.getfixturevalue("pg_stack" if request.param == "postgres" else "os_stack")  # type: ignore[no-any-return]


async def _processed(stack: Stack, token: str, name: str, text: str) -> dict[str, Any]:
    response = await upload(stack.client, token, name, text.encode(), documentType="CONTRACT")
    body = response.json()
    assert body.get("errors") is None, body
    document_id = body["data"]["uploadDocument"]["document"]["id"]
    await stack.run_jobs()
    from tests.factories import gql

    found = await gql(stack.client, DOCUMENT, {"id": document_id}, token=token)
    assert found.get("errors") is None, found
    return {"id": document_id, **found["data"]["document"]}


def _flagged(document: dict[str, Any]) -> dict[str, set[str]]:
    return {
        edge["node"]["name"]: {
            item["id"].rsplit("-", 1)[0]
            for analysis in edge["node"]["analyses"]
            for item in analysis["feedbackItems"]
        }
        for edge in document["sections"]["edges"]
    }


async def test_a_german_contract_is_read_and_searched_in_german(
    stack: Stack, world: Tenant
) -> None:
    token = world.tokens[Role.ADMIN]
    # given a German contract uploaded (a file of its own per backend: no deduplication)
    document = await _processed(
        stack, token, f"rahmenvertrag-{stack.name}.txt", GERMAN_CONTRACT + f"\n{stack.name}\n"
    )
    # then the document and its sections are German, and the clauses are flagged
    assert document["processingStatus"] == "COMPLETED"
    assert document["languageCode"] == "de"
    assert {e["node"]["languageCode"] for e in document["sections"]["edges"]} == {"de"}
    flagged = _flagged(document)
    assert "unlimited-liability" in flagged["2. Haftungen und Gewährleistung"]
    assert "auto-renewal" in flagged["1. Laufzeit"]
    assert document["riskLevel"] == "HIGH"
    # and search stems German: "Haftung" finds "Haftungen", "Vertrag" finds "Verträge"
    for query, heading in (
        ("Haftung", "2. Haftungen und Gewährleistung"),
        ("Vertrag Schriftform", "3. Schlussbestimmungen"),
    ):
        body = await stack.search(token, query, filter={"documentId": document["id"]})
        assert body.get("errors") is None, body
        hits = body["data"]["search"]["edges"]
        assert heading in {h["node"]["section"]["name"] for h in hits}, (query, hits)
        assert all(h["node"]["highlights"] for h in hits)
    # and the PII-free index holds no name: "jane" (a first name) finds nothing
    for query in ("jane", "Jane Doe", "doe"):
        body = await stack.search(token, query)
        assert body["data"]["search"]["totalCount"] == 0, (query, body)


async def test_a_french_contract_is_read_in_french(stack: Stack, world: Tenant) -> None:
    token = world.tokens[Role.ADMIN]
    document = await _processed(
        stack, token, f"contrat-{stack.name}.txt", FRENCH_CONTRACT + f"\n{stack.name}\n"
    )
    assert document["languageCode"] == "fr"
    assert {e["node"]["languageCode"] for e in document["sections"]["edges"]} == {"fr"}
    flagged = _flagged(document)
    assert "auto-renewal" in flagged["1. Durée"]
    assert "unlimited-liability" in flagged["2. Responsabilité"]
    # French stemming: "responsabilités" finds "responsabilité"
    body = await stack.search(token, "responsabilités", filter={"documentId": document["id"]})
    names = {h["node"]["section"]["name"] for h in body["data"]["search"]["edges"]}
    assert "2. Responsabilité" in names, body


# --- the migration -----------------------------------------------------------------------------


async def test_the_migration_detects_the_languages_of_existing_sections(
    new_database: Any,
) -> None:
    import asyncio

    import asyncpg
    from sqlalchemy.engine import make_url

    from prism.db import migrations

    url = await new_database()
    await asyncio.to_thread(migrations.upgrade, url, "0018")
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(plain)
    try:
        org = await conn.fetchval("INSERT INTO organizations (name) VALUES ('m') RETURNING id")
        document = await conn.fetchval(
            "INSERT INTO documents (organization_id, filename, mime_type, file_size, sha256,"
            " document_type, classification, processing_status, storage_tier, total_sections,"
            " total_feedback_items) VALUES ($1, 'v.txt', 'text/plain', 1, $2, 'CONTRACT',"
            " 'INTERNAL', 'COMPLETED', 'HOT', 2, 0) RETURNING id",
            org,
            "0" * 64,
        )
        for ord_, text in enumerate(
            [
                "Der Lieferant übernimmt die Haftungen für alle Schäden aus diesem Vertrag.",
                "Die Verträge verlängern sich jeweils um ein weiteres Jahr.",
            ]
        ):
            await conn.execute(
                "INSERT INTO document_sections (organization_id, document_id, ord, name,"
                " content, word_count, search_text) VALUES ($1, $2, $3, 'x', $4, 10, $4)",
                org,
                document,
                ord_,
                text,
            )
        await conn.close()
        # when the languages revision runs
        await asyncio.to_thread(migrations.upgrade, url)
        conn = await asyncpg.connect(plain)
        # then sections and the document are German, and their vectors stem German
        languages = await conn.fetch("SELECT language_code FROM document_sections")
        assert {r["language_code"] for r in languages} == {"de"}
        assert await conn.fetchval("SELECT language_code FROM documents") == "de"
        await conn.execute("SELECT set_config('prism.org_id', $1, false)", str(org))
        assert await conn.fetchval("SELECT count(*) FROM prism_match_sections('Haftung')") == 1
        # and back down: the English vector again
        await conn.close()
        await asyncio.to_thread(migrations.downgrade, url, "0018")
        conn = await asyncpg.connect(plain)
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM document_sections WHERE search_vector @@ "
                "websearch_to_tsquery('english', 'Haftung')"
            )
            == 0
        )
    finally:
        await conn.close()


async def test_an_index_made_before_languages_gets_their_fields_and_a_reindex_fills_them(
    settings: Settings, database_url: str, opensearch_url: str, services: Any
) -> None:
    from prism.jobs.indexing import reindex
    from prism.search.opensearch import MAPPINGS
    from tests.factories import add_document, gql
    from tests.search_helpers import SEARCH

    tenant = await make_tenant(services)
    german = await add_document(services, tenant, text=GERMAN_CONTRACT)
    configured = opensearch_settings(settings, opensearch_url)
    async with running(configured, database_url, "opensearch") as stack:
        backend = stack.services.search.opensearch
        assert backend is not None
        # given an index as the release before made it: one English text field
        old = {
            **MAPPINGS,
            "properties": {
                k: v
                for k, v in MAPPINGS["properties"].items()
                if k not in ("language", "text_de", "text_fr", "text_simple")
            },
        }
        await backend.client.indices.create(
            index=f"{backend.alias}-initial",
            body={"mappings": old, "aliases": {backend.alias: {"is_write_index": True}}},
        )
        # when Prism starts on it, the language fields are added in place
        await backend.ensure_index()
        mapping = await backend.client.indices.get_mapping(index=backend.alias)
        (fields,) = [m["mappings"]["properties"] for m in mapping.values()]
        assert fields["text_de"]["analyzer"] == "german"
        # and after a reindex the German contract is in its field, stemmed in German
        await reindex(stack.services.db, stack.services.search, organization_id=None)
        admin = tenant.tokens[Role.ADMIN]
        body = await gql(
            stack.client,
            SEARCH,
            {"q": "Haftung", "f": {"documentId": _gid(german.id)}},
            token=admin,
        )
        assert body["data"]["search"]["totalCount"] >= 1, body


def _gid(document_id: Any) -> str:
    from tests.factories import gid

    return gid("Document", document_id)


async def test_a_reindex_masks_names_in_sections_scanned_before(services: Any) -> None:
    import sqlalchemy as sa

    from prism.jobs.indexing import reindex
    from prism.models.documents import Section
    from prism.models.scope import Scope
    from prism.search import SearchRequest, mandatory_filter
    from tests.factories import add_document

    tenant = await make_tenant(services)
    document = await add_document(
        services, tenant, text="NOTE\n\n1. Contact\nThe contact person is Jane Doe in Berlin.\n"
    )
    # given a section scanned before names were PII: no finding, its name in the search text
    async with services.db.transaction(tenant.org_id) as session:
        await session.execute(
            sa.update(Section)
            .where(Section.document_id == document.id)
            .values(pii_findings=[], search_text=Section.content)
        )
    scope = mandatory_filter(Scope.system(tenant.org_id))

    async def hits(query: str) -> int:
        page = await services.search.postgres.search(scope, SearchRequest.parse(query))
        return int(page.total_count)

    assert await hits("jane") == 1
    # when the operator reindexes
    await reindex(services.db, services.search, organization_id=tenant.org_id)
    # then the name is a finding, and the search text has it masked
    assert await hits("jane") == 0
    assert await hits("Berlin") == 1
    async with services.db.transaction(tenant.org_id) as session:
        findings = await session.scalars(
            sa.select(Section.pii_findings).where(Section.document_id == document.id)
        )
        assert "PERSON" in {f["type"] for found in findings for f in found}
