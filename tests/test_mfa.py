"""MFA: TOTP enrolment, sign-in with a second factor, replay and window, backup codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyotp
import sqlalchemy as sa

from prism.authn.mfa import matching_step
from prism.models.enums import Role
from prism.models.users import MfaBackupCode, User
from prism.services import Services
from tests.factories import PASSWORD, Tenant, codes, gql

LOGIN = """mutation($email: String!, $password: String!, $totp: String) {
  login(input: {email: $email, password: $password, totp: $totp}) {
    accessToken user { mfaEnabled } } }"""
BEGIN = "mutation { beginMfaEnrollment { secret otpauthUri } }"
CONFIRM = """mutation($code: String!) {
  confirmMfaEnrollment(input: {code: $code}) { backupCodes user { mfaEnabled } } }"""
REGENERATE = """mutation($code: String!) {
  regenerateMfaBackupCodes(input: {code: $code}) { backupCodes } }"""
DISABLE = "mutation($code: String!) { disableMfa(input: {code: $code}) { mfaEnabled } }"
RESET = "mutation($id: ID!) { resetUserMfa(userId: $id) { mfaEnabled } }"


async def _login(
    client: httpx.AsyncClient, email: str, totp: str | None = None, password: str = PASSWORD
) -> dict[str, Any]:
    return await gql(client, LOGIN, {"email": email, "password": password, "totp": totp})


async def _session(client: httpx.AsyncClient, email: str) -> str:
    body = await _login(client, email)
    assert body.get("errors") is None, body
    token: str = body["data"]["login"]["accessToken"]
    return token


def _code(secret: str, steps_from_now: int = 0) -> str:
    return pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30 * steps_from_now))


async def _enrol(client: httpx.AsyncClient, email: str) -> tuple[str, list[str]]:
    """Turn MFA on for ``email``; returns (secret, backup codes). Uses the current step."""
    token = await _session(client, email)
    begun = await gql(client, BEGIN, token=token)
    assert begun.get("errors") is None, begun
    secret = begun["data"]["beginMfaEnrollment"]["secret"]
    confirmed = await gql(client, CONFIRM, {"code": _code(secret)}, token=token)
    assert confirmed.get("errors") is None, confirmed
    assert confirmed["data"]["confirmMfaEnrollment"]["user"] == {"mfaEnabled": True}
    return secret, confirmed["data"]["confirmMfaEnrollment"]["backupCodes"]


def test_codes_are_accepted_one_step_either_side_and_no_further() -> None:
    secret = pyotp.random_base32()
    now = datetime(2026, 11, 26, 12, 0, 15, tzinfo=UTC)
    totp = pyotp.TOTP(secret)
    here = totp.timecode(now)
    for offset in (-1, 0, 1):
        code = totp.at(now + timedelta(seconds=30 * offset))
        assert matching_step(secret, code, now) == here + offset
    for offset in (-3, -2, 2, 3):
        assert matching_step(secret, totp.at(now + timedelta(seconds=30 * offset)), now) is None
    for junk in ("", "12345", "1234567", "abcdef", "12 456"):
        assert matching_step(secret, junk, now) is None


async def test_enrolment_then_sign_in_asks_for_the_code(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    email = tenant.email(Role.REVIEWER)
    token = await _session(client, email)
    begun = (await gql(client, BEGIN, token=token))["data"]["beginMfaEnrollment"]
    assert begun["otpauthUri"].startswith("otpauth://totp/Prism:")
    # a wrong code does not turn MFA on
    wrong = await gql(client, CONFIRM, {"code": "000000"}, token=token)
    assert codes(wrong) == ["BAD_USER_INPUT"]
    assert (await _login(client, email)).get("errors") is None
    confirmed = await gql(client, CONFIRM, {"code": _code(begun["secret"])}, token=token)
    backup = confirmed["data"]["confirmMfaEnrollment"]["backupCodes"]
    assert len(backup) == 10
    assert len(set(backup)) == 10

    # the secret is sealed at rest, the backup codes are hashes
    async with services.db.transaction(tenant.org_id) as session:
        user = await session.get(User, tenant.users[Role.REVIEWER].id)
        stored = list(await session.scalars(sa.select(MfaBackupCode.code_hash)))
    assert user is not None
    assert user.mfa_secret is not None
    assert begun["secret"].encode() not in user.mfa_secret
    assert all(c.replace("-", "").encode() not in h for c in backup for h in stored)

    missing = await _login(client, email)
    assert codes(missing) == ["UNAUTHENTICATED"]
    assert missing["errors"][0]["extensions"]["mfaRequired"] is True
    bad = await _login(client, email, "123456")
    assert codes(bad) == ["UNAUTHENTICATED"]
    assert bad["errors"][0]["extensions"]["mfaRequired"]
    # the next step's code works once (the current one was spent on confirming)
    good = await _login(client, email, _code(begun["secret"], 1))
    assert good.get("errors") is None, good
    assert good["data"]["login"]["user"] == {"mfaEnabled": True}


async def test_a_code_is_not_reusable_within_its_window(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    email = tenant.email(Role.VIEWER)
    secret, _ = await _enrol(client, email)
    replay_of_confirmation = await _login(client, email, _code(secret))
    assert codes(replay_of_confirmation) == ["UNAUTHENTICATED"]
    later = _code(secret, 1)
    assert (await _login(client, email, later)).get("errors") is None
    assert codes(await _login(client, email, later)) == ["UNAUTHENTICATED"]
    # an older code than the last accepted one is a replay too
    assert codes(await _login(client, email, _code(secret))) == ["UNAUTHENTICATED"]


async def test_backup_codes_work_once(client: httpx.AsyncClient, tenant: Tenant) -> None:
    email = tenant.email(Role.APPROVER)
    _, backup = await _enrol(client, email)
    typed = backup[0].upper().replace("-", " ")  # as people type them
    assert (await _login(client, email, typed)).get("errors") is None
    assert codes(await _login(client, email, backup[0])) == ["UNAUTHENTICATED"]
    assert (await _login(client, email, backup[1])).get("errors") is None


async def test_regenerated_backup_codes_replace_the_old_ones(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    email = tenant.email(Role.AUDITOR)
    _, backup = await _enrol(client, email)
    token = (await _login(client, email, backup[0]))["data"]["login"]["accessToken"]
    fresh = await gql(client, REGENERATE, {"code": backup[1]}, token=token)
    assert fresh.get("errors") is None, fresh
    new_codes = fresh["data"]["regenerateMfaBackupCodes"]["backupCodes"]
    assert codes(await _login(client, email, backup[2])) == ["UNAUTHENTICATED"]
    assert (await _login(client, email, new_codes[0])).get("errors") is None


async def test_disable_needs_a_valid_code(client: httpx.AsyncClient, tenant: Tenant) -> None:
    email = tenant.email(Role.VIEWER)
    _, backup = await _enrol(client, email)
    token = (await _login(client, email, backup[0]))["data"]["login"]["accessToken"]
    assert codes(await gql(client, DISABLE, {"code": "000000"}, token=token)) == ["BAD_USER_INPUT"]
    off = await gql(client, DISABLE, {"code": backup[1]}, token=token)
    assert off["data"]["disableMfa"] == {"mfaEnabled": False}
    assert (await _login(client, email)).get("errors") is None


async def test_api_tokens_cannot_manage_mfa(client: httpx.AsyncClient, tenant: Tenant) -> None:
    token = tenant.tokens[Role.ADMIN]  # an all-scopes token of an ADMIN
    assert codes(await gql(client, BEGIN, token=token)) == ["FORBIDDEN"]
    reset = await gql(client, RESET, {"id": tenant.user_gid(Role.VIEWER)}, token=token)
    assert codes(reset) == ["FORBIDDEN"]


async def test_an_admin_resets_a_lost_authenticator(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    email = tenant.email(Role.REVIEWER)
    _, backup = await _enrol(client, email)
    reviewer = (await _login(client, email, backup[0]))["data"]["login"]["accessToken"]
    refused = await gql(client, RESET, {"id": tenant.user_gid(Role.REVIEWER)}, token=reviewer)
    assert codes(refused) == ["FORBIDDEN"]
    admin = await _session(client, tenant.email(Role.ADMIN))
    elsewhere = await gql(client, RESET, {"id": other_tenant.user_gid(Role.VIEWER)}, token=admin)
    assert codes(elsewhere) == ["NOT_FOUND"]
    done = await gql(client, RESET, {"id": tenant.user_gid(Role.REVIEWER)}, token=admin)
    assert done["data"]["resetUserMfa"] == {"mfaEnabled": False}
    assert (await _login(client, email)).get("errors") is None
