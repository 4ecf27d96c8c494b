"""Governance fields: retention policies (ADMIN) and the data-quality report (ADMIN,
AUDITOR), each calling its use case (``prism.governance``)."""

from __future__ import annotations

from prism.execution.context import Context
from prism.governance import quality, retention
from prism.models.enums import DataCategory
from prism.models.governance import QualityRun, RetentionPolicy


async def retention_policies(ctx: Context) -> list[RetentionPolicy]:
    principal = ctx.require_principal()
    async with ctx.transaction.read() as session:
        return await retention.list_retention_policies(session, ctx.services, principal)


async def update_retention_policy(
    ctx: Context, category: DataCategory, changes: dict[str, int | None]
) -> RetentionPolicy:
    principal = ctx.require_principal()
    async with ctx.transaction.write() as session:
        return await retention.update_retention_policy(
            session, ctx.services, principal, ctx.meta, category, changes
        )


async def data_quality_report(ctx: Context) -> QualityRun | None:
    principal = ctx.require_principal()
    async with ctx.transaction.read() as session:
        return await quality.read_quality_report(session, ctx.services, principal)
