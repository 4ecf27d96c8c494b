"""Governance fields: retention policies (ADMIN) and the data-quality report (ADMIN,
AUDITOR)."""

from __future__ import annotations

from prism.authz.policy import Action, require
from prism.execution.context import Context
from prism.governance import quality, retention
from prism.models import governance as governance_models
from prism.models.enums import DataCategory
from prism.models.governance import QualityRun, RetentionPolicy


async def retention_policies(ctx: Context) -> list[RetentionPolicy]:
    principal = ctx.require_principal()
    require(principal, Action.RETENTION_READ)
    async with ctx.transaction.read() as session:
        return await retention.read_policies(session, principal.organization_id)


async def update_retention_policy(
    ctx: Context, category: DataCategory, changes: dict[str, int | None]
) -> RetentionPolicy:
    principal = ctx.require_principal()
    require(principal, Action.RETENTION_UPDATE)
    async with ctx.transaction.write() as session:
        return await retention.update_policy(
            session,
            principal.organization_id,
            category,
            changes,
            actor=ctx.actor,
            meta=ctx.meta,
        )


async def data_quality_report(ctx: Context) -> QualityRun | None:
    principal = ctx.require_principal()
    require(principal, Action.QUALITY_READ)
    async with ctx.transaction.read() as session:
        run = await governance_models.read_latest_quality_run(session, principal.organization_id)
    if run is not None:
        quality.export_gauges(run)
    return run
