"""Sign-in throttling state, kept before any organization is known.

Rows are keyed by a keyed hash (never an e-mail address or an IP in the clear) and are
reachable by the app role only through two SECURITY DEFINER functions (migration 0005), which
apply the limits atomically so that parallel guesses are counted like sequential ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from prism.models.base import Base


class AuthThrottle(Base):
    __tablename__ = "auth_throttle"

    key: Mapped[bytes] = mapped_column(sa.LargeBinary(32), primary_key=True)
    failures: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="0")
    last_failure_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    locked_until: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    last_success_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


@dataclass(frozen=True)
class Limit:
    """``free`` failures within the window, then a lock of ``base_seconds`` doubling with
    each further failure, up to ``max_seconds``."""

    key: bytes
    free: int
    base_seconds: int
    max_seconds: int
    # Skipped for a source that signed in to this account recently (see `known`).
    skip_when_known: bool = False


async def reserve_attempt(session: AsyncSession, limits: Sequence[Limit], known: bytes) -> int:
    """Count one attempt against every key, as a failure until ``record_success`` says
    otherwise. Returns 0 (go ahead) or the seconds to wait, in which case nothing is
    counted: refused attempts never extend a lock."""
    wait = await session.scalar(
        sa.select(
            sa.func.prism_auth_attempt(
                [limit.key for limit in limits],
                [limit.free for limit in limits],
                [limit.base_seconds for limit in limits],
                [limit.max_seconds for limit in limits],
                [limit.skip_when_known for limit in limits],
                known,
            )
        )
    )
    return int(wait or 0)


async def record_success(
    session: AsyncSession, *, reset: Sequence[bytes], refund: Sequence[bytes], known: bytes
) -> None:
    """A successful sign-in: ``reset`` keys start over, ``refund`` keys get the reserved
    attempt back, and ``known`` marks the (account, source) pair as recently good."""
    await session.execute(sa.select(sa.func.prism_auth_success(list(reset), list(refund), known)))
