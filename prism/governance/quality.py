"""Data quality: checks computed in SQL per table and dimension (completeness, validity,
consistency, timeliness), each scored 0-1 as the share of its rows that pass, stored per run
for the organization, and exported as Prometheus gauges."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from prism.authz.policy import Action, require
from prism.authz.principal import Principal
from prism.db.engine import Database
from prism.models import governance as models
from prism.models.governance import QualityRun
from prism.observability import DATA_QUALITY_SCORE
from prism.services import Services


@dataclass(frozen=True)
class Check:
    table: str
    dimension: str
    name: str
    description: str
    # SQL over the table's columns: which rows the check looks at, and which of them pass.
    population: str
    passes: str


LIVE = "deleted_at IS NULL"
CHECKS: tuple[Check, ...] = (
    Check(
        "documents",
        "completeness",
        "document_required_fields",
        "Live documents have a filename, a content hash and a stored object.",
        LIVE,
        "btrim(filename) <> '' AND sha256 IS NOT NULL AND storage_key IS NOT NULL",
    ),
    Check(
        "documents",
        "validity",
        "document_values_in_range",
        "Hashes are 64 hex digits; counts are not negative; confidence is within 0-1.",
        "true",
        "sha256 ~ '^[0-9a-f]{64}$' AND coalesce(word_count, 0) >= 0 "
        "AND coalesce(page_count, 0) >= 0 AND total_sections >= 0 "
        "AND total_feedback_items >= 0 AND (confidence IS NULL OR confidence BETWEEN 0 AND 1)",
    ),
    Check(
        "documents",
        "consistency",
        "document_hash_unique",
        "No two live documents of the organization hold the same bytes.",
        LIVE,
        "NOT EXISTS (SELECT 1 FROM documents o WHERE o.organization_id = documents.organization_id"
        " AND o.sha256 = documents.sha256 AND o.id <> documents.id AND o.deleted_at IS NULL)",
    ),
    Check(
        "documents",
        "consistency",
        "document_section_count",
        "A document's section count matches the sections stored for it.",
        f"{LIVE} AND processing_status NOT IN ('UPLOADED', 'EXTRACTING', 'FAILED')",
        "total_sections = (SELECT count(*) FROM document_sections s "
        "WHERE s.document_id = documents.id)",
    ),
    Check(
        "documents",
        "timeliness",
        "document_processing_not_stuck",
        "Documents do not sit in the pipeline for more than an hour.",
        LIVE,
        "processing_status IN ('COMPLETED', 'FAILED', 'EXTRACTED') "
        "OR updated_at > now() - interval '1 hour'",
    ),
    Check(
        "analysis_results",
        "validity",
        "analysis_values_in_range",
        "Confidence within 0-1, usage not negative, completed no earlier than started.",
        "true",
        "(confidence IS NULL OR confidence BETWEEN 0 AND 1) AND tokens_used >= 0 "
        "AND cost_usd >= 0 AND duration_seconds >= 0 AND completed_at >= started_at",
    ),
    Check(
        "analysis_results",
        "consistency",
        "analysis_section_of_document",
        "An analysis's section belongs to the analysis's document.",
        "true",
        "EXISTS (SELECT 1 FROM document_sections s WHERE s.id = analysis_results.section_id "
        "AND s.document_id = analysis_results.document_id)",
    ),
    Check(
        "analysis_results",
        "timeliness",
        "analysis_within_sla",
        "Analyses finished within the SLA (PRISM_ANALYSIS_SLA_SECONDS).",
        "true",
        "duration_seconds <= :sla",
    ),
    Check(
        "user_feedback",
        "completeness",
        "feedback_custom_text",
        "CUSTOM and MODIFIED feedback carries its text.",
        "action IN ('CUSTOM', 'MODIFIED')",
        "btrim(coalesce(custom_text, '')) <> ''",
    ),
    Check(
        "user_feedback",
        "consistency",
        "feedback_analysis_of_document",
        "Feedback points at an analysis of its own document.",
        "analysis_id IS NOT NULL",
        "EXISTS (SELECT 1 FROM analysis_results a WHERE a.id = user_feedback.analysis_id "
        "AND a.document_id = user_feedback.document_id)",
    ),
    Check(
        "users",
        "validity",
        "user_email_valid",
        "E-mail addresses have one @ with text on both sides.",
        "true",
        "email ~ '^[^@\\s]+@[^@\\s]+$'",
    ),
    Check(
        "users",
        "completeness",
        "user_names",
        "Active users have a first and a last name.",
        "is_active",
        "btrim(coalesce(first_name, '')) <> '' AND btrim(coalesce(last_name, '')) <> ''",
    ),
)


@dataclass(frozen=True)
class CheckResult:
    check: Check
    checked_rows: int
    failing_rows: int

    @property
    def score(self) -> float:
        if self.checked_rows == 0:
            return 1.0
        return round(1 - self.failing_rows / self.checked_rows, 6)

    def as_json(self) -> dict[str, Any]:
        return {
            "table": self.check.table,
            "dimension": self.check.dimension,
            "name": self.check.name,
            "description": self.check.description,
            "score": self.score,
            "failingRows": self.failing_rows,
            "checkedRows": self.checked_rows,
        }


async def assess(
    db: Database, organization_id: uuid.UUID, *, analysis_sla_seconds: float
) -> QualityRun:
    """Run every check on the organization's rows (one snapshot), store the run, set the
    gauges."""
    async with db.transaction(organization_id) as session:
        results = []
        for check in CHECKS:
            checked, failing = await models.count_check(
                session,
                table=check.table,
                population=check.population,
                passes=check.passes,
                params={"org": organization_id, "sla": analysis_sla_seconds}
                if ":sla" in check.passes
                else {"org": organization_id},
            )
            results.append(CheckResult(check, checked, failing))
        overall = round(sum(r.score for r in results) / len(results), 6)
        run = await models.create_quality_run(
            session,
            organization_id,
            overall_score=overall,
            checks=[r.as_json() for r in results],
        )
    export_gauges(run)
    return run


def export_gauges(run: QualityRun) -> None:
    org = str(run.organization_id)
    DATA_QUALITY_SCORE.labels(org, "overall", "all", "overall").set(run.overall_score)
    for check in run.checks:
        DATA_QUALITY_SCORE.labels(org, check["table"], check["dimension"], check["name"]).set(
            check["score"]
        )


async def read_quality_report(
    session: AsyncSession, services: Services, principal: Principal
) -> QualityRun | None:
    """The organization's latest data-quality run (ADMIN, AUDITOR); its scores are exported
    as gauges as they are read."""
    require(principal, Action.QUALITY_READ)
    run = await models.read_latest_quality_run(session, principal.organization_id)
    if run is not None:
        export_gauges(run)
    return run
