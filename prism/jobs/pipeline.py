"""From extracted text to sections, PII findings, analyses and document aggregates."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from prism.ingest.pii import scan
from prism.ingest.text import TextSection, count_words
from prism.jobs.analyzers import Analyzer
from prism.models import analyses as analysis_models
from prism.models import documents as document_models
from prism.models.analyses import Analysis
from prism.models.base import utcnow
from prism.models.documents import Document, Section
from prism.models.enums import ProcessingStatus


async def store_sections(
    session: AsyncSession, document: Document, parts: list[TextSection]
) -> list[Section]:
    """Sections with their PII findings (offsets only)."""
    sections = [
        Section(
            organization_id=document.organization_id,
            document_id=document.id,
            ord=index,
            name=part.name,
            content=part.content,
            word_count=part.word_count,
            pii_findings=[f.as_json() for f in scan(part.content)],
        )
        for index, part in enumerate(parts)
    ]
    await document_models.add_sections(session, sections)
    document.total_sections = len(sections)
    document.word_count = sum(count_words(p.content) for p in parts)
    document.processing_status = ProcessingStatus.EXTRACTED
    return sections


async def analyze_sections(
    session: AsyncSession, document: Document, sections: list[Section], analyzer: Analyzer
) -> list[Analysis]:
    """One analysis per section, then the document's aggregates from them."""
    results: list[Analysis] = []
    for section in sections:
        started = utcnow()
        clock = time.perf_counter()
        outcome = await analyzer.analyze(
            section_name=section.name,
            text=section.content,
            pii_types=[f["type"] for f in section.pii_findings],
        )
        elapsed = time.perf_counter() - clock
        results.append(
            await analysis_models.add_analysis(
                session,
                Analysis(
                    organization_id=document.organization_id,
                    document_id=document.id,
                    section_id=section.id,
                    model=outcome.model,
                    model_version=outcome.model_version,
                    started_at=started,
                    completed_at=started + timedelta(seconds=elapsed),
                    duration_seconds=elapsed,
                    risk_level=outcome.risk_level,
                    confidence=outcome.confidence,
                    tokens_used=outcome.tokens_used,
                    cost_usd=outcome.cost_usd,
                    feedback_items=[item.as_json() for item in outcome.items],
                ),
            )
        )
    apply_aggregates(document, results)
    return results


def apply_aggregates(document: Document, results: list[Analysis]) -> None:
    risks = [a.risk_level for a in results if a.risk_level is not None]
    confidences = [a.confidence for a in results if a.confidence is not None]
    document.total_feedback_items = sum(len(a.feedback_items) for a in results)
    document.risk_level = max(risks, key=lambda r: r.rank) if risks else None
    document.confidence = round(sum(confidences) / len(confidences), 4) if confidences else None
    document.cost_usd = sum((a.cost_usd for a in results), Decimal("0"))
    document.model_used = results[0].model if results else None
    document.processing_status = ProcessingStatus.COMPLETED
