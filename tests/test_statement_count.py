"""The number of SQL statements of a query grows with its depth, never with its rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import sqlalchemy as sa

from prism.analysis.rules import RulesAnalyzer
from prism.documents.processing import analyze_sections, store_sections
from prism.extraction.text import TextSection
from prism.models.documents import Document
from prism.models.enums import Classification, FeedbackAction, Role
from prism.models.feedback import Feedback
from prism.services import Services
from tests.factories import Tenant, gql

NESTED = """query($first: Int!) {
  documents(first: $first) {
    totalCount
    edges { node {
      filename uploadedBy { email }
      sections(first: 20) { edges { node {
        name content
        analyses { riskLevel feedbackItems { category } }
      } } }
      analyses(first: 20) { edges { node { model section { name } } } }
      feedback(first: 20) { edges { node { action author { email } analysis { id } } } }
    } }
  }
}"""


@contextmanager
def count_statements(app: Any) -> Iterator[list[str]]:
    """Statements the app's own engine sends while the block runs."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = app.state.services.db.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


async def _fill(services: Services, tenant: Tenant, documents: int, sections: int) -> None:
    """``documents`` × ``sections``, each section analysed, one feedback per document."""
    reviewer = tenant.users[Role.REVIEWER]
    async with services.db.transaction(tenant.org_id) as session:
        for d in range(documents):
            doc = Document(
                organization_id=tenant.org_id,
                uploaded_by=reviewer.id,
                filename=f"bulk-{d}.txt",
                mime_type="text/plain",
                file_size=10,
                sha256=uuid.uuid4().hex * 2,
                classification=Classification.INTERNAL,
            )
            session.add(doc)
            await session.flush()
            parts = [
                TextSection(f"S{s}", f"Clause {s}: automatically renews.") for s in range(sections)
            ]
            rows = await store_sections(session, doc, parts, envelope=services.envelope)
            analyses = await analyze_sections(
                session, doc, rows, RulesAnalyzer(), envelope=services.envelope
            )
            session.add(
                Feedback(
                    organization_id=tenant.org_id,
                    document_id=doc.id,
                    analysis_id=analyses[0].id,
                    section_id=rows[0].id,
                    user_id=reviewer.id,
                    action=FeedbackAction.ACCEPTED,
                )
            )
        await session.flush()


async def test_nested_list_runs_a_fixed_number_of_statements(
    app: Any, client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    # given 50 documents × 20 sections, with analyses, feedback and authors
    await _fill(services, tenant, documents=50, sections=20)
    token = tenant.tokens[Role.ADMIN]
    # the token is verified (and remembered) by a first request, counted by none
    await gql(client, NESTED, {"first": 1}, token=token)
    counts = {}
    for first in (1, 5, 50):
        with count_statements(app) as statements:
            body = await gql(client, NESTED, {"first": first}, token=token)
        assert body.get("errors") is None, body
        assert len(body["data"]["documents"]["edges"]) == first
        counts[first] = len(statements)
    # then the count does not move with the number of rows
    assert counts[1] == counts[5] == counts[50], counts
    assert counts[50] > 0, "the listener saw no statement: wrong engine?"
    # and stays small: auth (1) + transaction setup + one statement per level
    assert counts[50] <= 16, counts
