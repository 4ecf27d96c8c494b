"""Sign-in throttling: per (account, source) pair, per account and per source.

Every attempt is counted before the password is checked (so parallel guesses count like
sequential ones) and a success gives it back. Locks are short and double with each further
failure, up to 15 minutes, and expire by themselves: nobody is locked out for good. The
account-wide lock, the one a stranger could trigger against a victim, does not apply to a
source that signed in to that account in the last 30 days, so the victim's own browser still
gets in while an attacker elsewhere waits. Unknown e-mail addresses are throttled exactly like
known ones, so throttling reveals nothing about which accounts exist.

Password resets are throttled the same way in buckets of their own (``ResetRequestKeys``,
``ResetTokenKeys``): asking for reset e-mails, however often, never locks anyone's sign-in."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

from prism.authn.secrets import SecretBox
from prism.db.engine import Database
from prism.db.faults import retry_collisions
from prism.errors import RateLimited
from prism.models.throttle import Limit, record_success, reserve_attempt

FIFTEEN_MINUTES = 15 * 60
# (failures within an hour after which further attempts wait, first wait in seconds); waits
# double with each further failure up to fifteen minutes. "After 5 failures" means the 5th
# failure sets the lock and the 6th attempt is refused (the README's and the threat model's
# numbers are these).
PAIR = (5, 2)
ACCOUNT = (10, 30)
SOURCE = (50, 10)
# Reset e-mails asked for an address (anywhere) and from one source: each request counts (a
# request is never "given back"), so an address gets a few e-mails an hour at most.
RESET_REQUEST_ACCOUNT = (3, 60)
RESET_REQUEST_SOURCE = (20, 60)
# Reset tokens that do not work, from one source (a token is 256 random bits: this is
# hygiene, not what keeps them from being guessed).
RESET_TOKEN_SOURCE = (10, 30)


class Attempts(Protocol):
    """The buckets one kind of attempt is counted in."""

    @property
    def known(self) -> bytes:
        """The (account, source) key whose recent success skips ``skip_when_known`` limits."""
        ...

    @property
    def refusal(self) -> str:
        """What a refused attempt is told (before "Try again in N seconds.")."""
        ...

    def limits(self) -> list[Limit]: ...

    def given_back(self) -> tuple[list[bytes], list[bytes]]:
        """(keys that start over, keys refunded one attempt) after a success."""
        ...


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

    @property
    def known(self) -> bytes:
        return self.pair

    @property
    def refusal(self) -> str:
        return "Too many sign-in attempts."

    def limits(self) -> list[Limit]:
        # Always in this order: the SQL function locks rows in the order it is given.
        return [
            _limit(self.pair, PAIR),
            _limit(self.account, ACCOUNT, skip_when_known=True),
            _limit(self.source, SOURCE),
        ]

    def given_back(self) -> tuple[list[bytes], list[bytes]]:
        return [self.pair, self.account], [self.source]


@dataclass(frozen=True)
class ResetRequestKeys:
    """``requestPasswordReset``: per address and per source. A source that signed in to the
    address in the last 30 days is not held back by requests from elsewhere (``known`` is
    the sign-in pair's key: read here, never written)."""

    account: bytes
    source: bytes
    known: bytes

    @classmethod
    def of(cls, box: SecretBox, email: str, ip_address: str | None) -> ResetRequestKeys:
        account = email.strip().lower()
        source = source_of(ip_address)
        return cls(
            account=box.digest(b"reset-request-account", account),
            source=box.digest(b"reset-request-source", source),
            known=SignInKeys.of(box, email, ip_address).pair,
        )

    @property
    def refusal(self) -> str:
        return "Too many password reset requests."

    def limits(self) -> list[Limit]:
        return [
            _limit(self.account, RESET_REQUEST_ACCOUNT, skip_when_known=True),
            _limit(self.source, RESET_REQUEST_SOURCE),
        ]

    def given_back(self) -> tuple[list[bytes], list[bytes]]:
        return [], []


@dataclass(frozen=True)
class ResetTokenKeys:
    """``resetPassword``: tokens that do not work, per source (a working one is given back)."""

    source: bytes

    @classmethod
    def of(cls, box: SecretBox, ip_address: str | None) -> ResetTokenKeys:
        return cls(source=box.digest(b"reset-token-source", source_of(ip_address)))

    @property
    def known(self) -> bytes:
        return self.source

    @property
    def refusal(self) -> str:
        return "Too many password reset attempts."

    def limits(self) -> list[Limit]:
        return [_limit(self.source, RESET_TOKEN_SOURCE)]

    def given_back(self) -> tuple[list[bytes], list[bytes]]:
        return [], [self.source]


def _limit(key: bytes, rule: tuple[int, int], *, skip_when_known: bool = False) -> Limit:
    """``Limit.free`` failures pass without a lock and the next one sets it: for "wait after
    N failures" that is N - 1 (the attempt is counted before it is checked)."""
    locks_after, first_wait = rule
    return Limit(key, locks_after - 1, first_wait, FIFTEEN_MINUTES, skip_when_known)


async def reserve(db: Database, keys: Attempts) -> None:
    """Count an attempt or raise RateLimited (with ``retryAfter`` seconds)."""

    async def count() -> int:
        async with db.transaction(None) as session:
            return await reserve_attempt(session, keys.limits(), known=keys.known)

    wait = await retry_collisions(count, what="sign-in throttle")
    if wait:
        raise RateLimited(f"{keys.refusal} Try again in {wait} seconds.", retryAfter=wait)


async def succeeded(db: Database, keys: Attempts) -> None:
    reset, refund = keys.given_back()

    async def give_back() -> None:
        async with db.transaction(None) as session:
            await record_success(session, reset=reset, refund=refund, known=keys.known)

    await retry_collisions(give_back, what="sign-in throttle")
