"""Envelope encryption by classification: RESTRICTED text is ciphertext at rest (raw SQL),
readable through the API, sealed and unsealed on reclassification, and still readable after
`prism keys rotate` re-wraps the data keys, including by a process holding only the new KEK."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import aioboto3
import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from prism import bootstrap, migrations
from prism.config import Settings
from prism.governance.keyring import (
    KeyUnavailable,
    KmsKeys,
    LocalKeyring,
    add_key,
    file_keyring,
    key_id,
)
from prism.models.documents import Section
from prism.models.enums import Classification, Role
from prism.resolvers.context import Services
from tests.conftest import NewDatabase
from tests.factories import Tenant, add_document, gid, gql, make_tenant
from tests.test_storage import s3_endpoint  # noqa: F401 - the moto server (KMS too)

SECTIONS = """query($id: ID!) { document(id: $id) {
  classification sections(first: 20) { edges { node { name content } } } } }"""
FINDINGS = """query($id: ID!) { document(id: $id) {
  analyses(first: 20) { edges { node { feedbackItems { category quote } } } } } }"""
RECLASSIFY = """mutation($id: ID!, $c: Classification!) {
  updateDocument(input: {id: $id, classification: $c}) { classification } }"""


async def _raw_sections(services: Services, tenant: Tenant, document_id: uuid.UUID) -> list[sa.Row]:  # type: ignore[type-arg]
    async with services.db.transaction(tenant.org_id) as session:
        result = await session.execute(
            sa.text(
                "SELECT name, content, sealed FROM document_sections WHERE document_id = :d"
                " ORDER BY ord"
            ),
            {"d": document_id},
        )
        return list(result.all())


def _leaks(rows: list[sa.Row]) -> bool:  # type: ignore[type-arg]
    blob = b"".join(
        (r.name or "").encode() + (r.content or "").encode() + (r.sealed or b"") for r in rows
    )
    return any(
        needle in blob for needle in (b"unlimited liability", b"jane.doe", b"Liability", b"renew")
    )


async def test_restricted_text_is_ciphertext_at_rest_and_plain_through_the_api(
    services: Services, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    document = await add_document(services, tenant, classification=Classification.RESTRICTED)
    rows = await _raw_sections(services, tenant, document.id)
    assert rows
    assert all(r.sealed and r.content == "" and r.name == "" for r in rows)
    assert not _leaks(rows)
    body = await gql(
        client, SECTIONS, {"id": gid("Document", document.id)}, token=tenant.tokens[Role.ADMIN]
    )
    texts = [e["node"]["content"] for e in body["data"]["document"]["sections"]["edges"]]
    names = [e["node"]["name"] for e in body["data"]["document"]["sections"]["edges"]]
    assert any("unlimited liability" in t for t in texts)
    assert "2. Liability" in names
    # The analysis ran on the clear text; its findings (which quote it) are sealed too.
    async with services.db.transaction(tenant.org_id) as session:
        analyses = (
            await session.execute(
                sa.text(
                    "SELECT feedback_items::text AS items, sealed FROM analysis_results"
                    " WHERE document_id = :d"
                ),
                {"d": document.id},
            )
        ).all()
    assert analyses
    assert all(a.items == "[]" and a.sealed for a in analyses)
    assert not any(b"liability" in a.sealed for a in analyses)
    body = await gql(
        client, FINDINGS, {"id": gid("Document", document.id)}, token=tenant.tokens[Role.ADMIN]
    )
    quotes = [
        item["quote"] or ""
        for edge in body["data"]["document"]["analyses"]["edges"]
        for item in edge["node"]["feedbackItems"]
    ]
    assert any("liability" in q.lower() for q in quotes), body


async def test_other_classifications_stay_in_the_clear(services: Services, tenant: Tenant) -> None:
    document = await add_document(services, tenant, classification=Classification.CONFIDENTIAL)
    rows = await _raw_sections(services, tenant, document.id)
    assert all(r.sealed is None for r in rows)
    assert any("unlimited liability" in r.content for r in rows)


async def test_reclassification_seals_and_unseals(
    services: Services, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    document = await add_document(services, tenant, classification=Classification.INTERNAL)
    admin = tenant.tokens[Role.ADMIN]
    variables = {"id": gid("Document", document.id), "c": "RESTRICTED"}
    body = await gql(client, RECLASSIFY, variables, token=admin)
    assert body.get("errors") is None, body
    rows = await _raw_sections(services, tenant, document.id)
    assert all(r.sealed for r in rows)
    assert not _leaks(rows)
    body = await gql(client, SECTIONS, {"id": variables["id"]}, token=admin)
    texts = [e["node"]["content"] for e in body["data"]["document"]["sections"]["edges"]]
    assert any("unlimited liability" in t for t in texts)
    body = await gql(client, RECLASSIFY, {**variables, "c": "INTERNAL"}, token=admin)
    assert body.get("errors") is None, body
    rows = await _raw_sections(services, tenant, document.id)
    assert all(r.sealed is None for r in rows)
    assert any("unlimited liability" in r.content for r in rows)
    async with services.db.transaction(tenant.org_id) as session:
        sealed, items = (
            await session.execute(
                sa.text(
                    "SELECT count(sealed), sum(jsonb_array_length(feedback_items))"
                    " FROM analysis_results WHERE document_id = :d"
                ),
                {"d": document.id},
            )
        ).one()
    assert sealed == 0
    assert items > 0


def test_keyring_file_is_private_and_keeps_old_keys(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    seed = os.urandom(32)
    ring = file_keyring(path, seed)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ring.current_id == key_id(seed)
    added = add_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = file_keyring(path, os.urandom(32))  # an existing file is never reseeded
    assert again.current_id == added
    assert set(again.key_ids) == {key_id(seed), added}


async def test_local_keyring_binds_wrapped_keys_to_their_organization() -> None:
    ring = LocalKeyring(os.urandom(32))
    kek, wrapped = await ring.wrap(b"k" * 32, b"org-a")
    assert await ring.unwrap(kek, wrapped, b"org-a") == b"k" * 32
    with pytest.raises(KeyUnavailable):
        await ring.unwrap(kek, wrapped, b"org-b")


async def test_kms_wraps_and_unwraps_at_its_http_boundary(s3_endpoint: str) -> None:  # noqa: F811
    """Against moto's KMS (an HTTP server speaking the KMS API): what Prism sends and reads."""
    async with aioboto3.Session().client(
        "kms", endpoint_url=s3_endpoint, region_name="us-east-1"
    ) as kms:
        created = await kms.create_key(Description="prism test")
    kms_keys = KmsKeys(
        created["KeyMetadata"]["KeyId"], region="us-east-1", endpoint_url=s3_endpoint
    )
    kek, wrapped = await kms_keys.wrap(b"d" * 32, b"org-a")
    assert kek.startswith("kms:")
    assert b"d" * 32 not in wrapped
    assert await kms_keys.unwrap(kek, wrapped, b"org-a") == b"d" * 32


def _prism(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prism.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


async def test_keys_rotate_rewraps_without_touching_ciphertext(
    new_database: NewDatabase, settings: Settings, tmp_path: Path
) -> None:
    # given: a database and keyring of its own (rotation visits every organization)
    url = await new_database()
    await asyncio.to_thread(migrations.upgrade, url)
    own = settings.model_copy(update={"database_url": SecretStr(url), "data_dir": tmp_path})
    before = bootstrap.build_services(own, url)
    try:
        tenant = await make_tenant(before)
        document = await add_document(before, tenant, classification=Classification.RESTRICTED)
        rows = await _raw_sections(before, tenant, document.id)
        async with before.db.transaction(tenant.org_id) as session:
            old_kek, old_wrapped = (
                await session.execute(sa.text("SELECT kek_id, wrapped_key FROM data_keys"))
            ).one()

        # when: a new KEK is added and every data key re-wrapped, by the CLI
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
        env.update(PRISM_DATABASE_URL=url, PRISM_DATA_DIR=str(tmp_path), PRISM_LOG_LEVEL="WARNING")
        out = _prism("keys", "rotate", "--new-kek", env=env)
        assert str(tenant.org_id) in out.stdout

        # then: the wrapped key changed, the ciphertext did not
        async with before.db.transaction(tenant.org_id) as session:
            new_kek, new_wrapped = (
                await session.execute(sa.text("SELECT kek_id, wrapped_key FROM data_keys"))
            ).one()
        assert new_kek != old_kek
        assert new_wrapped != old_wrapped
        assert await _raw_sections(before, tenant, document.id) == rows
        # a running process keeps reading (its data key is cached: no downtime) ...
        assert await _clear_text(before, tenant, document.id)
    finally:
        await before.close()
    # ... and a process that holds only the new KEK reads too
    keyring = json.loads((tmp_path / "keyring.json").read_text())
    keyring["keys"] = {keyring["current"]: keyring["keys"][keyring["current"]]}
    (tmp_path / "keyring.json").write_text(json.dumps(keyring))
    after = bootstrap.build_services(own, url)
    try:
        assert after.pipeline.envelope.keks.current_id == new_kek
        assert await _clear_text(after, tenant, document.id)
    finally:
        await after.close()


async def _clear_text(services: Services, tenant: Tenant, document_id: uuid.UUID) -> bool:
    async with services.db.transaction(tenant.org_id) as session:
        sections = list(
            await session.scalars(sa.select(Section).where(Section.document_id == document_id))
        )
        await services.pipeline.envelope.open_sections(session, sections)
    names = {s.name for s in sections}
    return any("unlimited liability" in s.content for s in sections) and "2. Liability" in names


async def test_a_data_key_first_used_in_a_rolled_back_transaction_still_opens(
    services: Services, settings: Settings, tenant: Tenant
) -> None:
    envelope = services.pipeline.envelope
    with pytest.raises(RuntimeError):
        async with services.db.transaction(tenant.org_id) as session:
            await envelope.seal(session, tenant.org_id, b"first", b"c")
            raise RuntimeError("the caller's transaction fails")
    async with services.db.transaction(tenant.org_id) as session:
        sealed = await envelope.seal(session, tenant.org_id, b"second", b"c")
    restarted = bootstrap.envelope(settings, services.db)  # another process, nothing cached
    async with services.db.transaction(tenant.org_id) as session:
        assert await restarted.open(session, tenant.org_id, sealed, b"c") == b"second"
