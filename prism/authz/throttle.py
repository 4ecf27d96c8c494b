"""Sign-in throttling: per (account, source) pair, per account and per source.

Every attempt is counted before the password is checked (so parallel guesses count like
sequential ones) and a success gives it back. Locks are short and double with each further
failure, up to 15 minutes, and expire by themselves: nobody is locked out for good. The
account-wide lock, the one a stranger could trigger against a victim, does not apply to a
source that signed in to that account in the last 30 days, so the victim's own browser still
gets in while an attacker elsewhere waits. Unknown e-mail addresses are throttled exactly like
known ones, so throttling reveals nothing about which accounts exist."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from prism.authz.secrets import SecretBox
from prism.errors import RateLimited
from prism.models.db import Database
from prism.models.faults import retry_collisions
from prism.models.throttle import Limit, record_success, reserve_attempt

FIFTEEN_MINUTES = 15 * 60
# (free failures per hour, first lock in seconds); locks double up to fifteen minutes.
PAIR = (5, 2)
ACCOUNT = (10, 30)
SOURCE = (50, 10)


def source_of(ip_address: str | None) -> str:
    """IPv6 clients hold whole /64s: one of them is one source."""
    if not ip_address:
        return "unknown"
    try:
        address = ipaddress.ip_address(ip_address)
    except ValueError:
        return "unknown"
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@dataclass(frozen=True)
class SignInKeys:
    pair: bytes
    account: bytes
    source: bytes

    @classmethod
    def of(cls, box: SecretBox, email: str, ip_address: str | None) -> SignInKeys:
        account = email.strip().lower()
        source = source_of(ip_address)
        return cls(
            pair=box.digest(b"throttle-pair", f"{account}\n{source}"),
            account=box.digest(b"throttle-account", account),
            source=box.digest(b"throttle-source", source),
        )

    def limits(self) -> list[Limit]:
        # Always in this order: the SQL function locks rows in the order it is given.
        return [
            Limit(self.pair, *PAIR, FIFTEEN_MINUTES),
            Limit(self.account, *ACCOUNT, FIFTEEN_MINUTES, skip_when_known=True),
            Limit(self.source, *SOURCE, FIFTEEN_MINUTES),
        ]


async def reserve(db: Database, keys: SignInKeys) -> None:
    """Count an attempt or raise RateLimited (with ``retryAfter`` seconds)."""

    async def count() -> int:
        async with db.transaction(None) as session:
            return await reserve_attempt(session, keys.limits(), known=keys.pair)

    wait = await retry_collisions(count, what="sign-in throttle")
    if wait:
        raise RateLimited(
            f"Too many sign-in attempts. Try again in {wait} seconds.", retryAfter=wait
        )


async def succeeded(db: Database, keys: SignInKeys) -> None:
    async def give_back() -> None:
        async with db.transaction(None) as session:
            await record_success(
                session, reset=[keys.pair, keys.account], refund=[keys.source], known=keys.pair
            )

    await retry_collisions(give_back, what="sign-in throttle")
