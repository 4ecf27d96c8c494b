"""Envelope encryption by classification: RESTRICTED text is ciphertext at rest (raw SQL),
readable through the API, sealed and unsealed on reclassification, and still readable after
`prism keys rotate` re-wraps the data keys, including by a process holding only the new KEK."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import aioboto3
import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from prism import bootstrap
from prism.authn.secrets import SecretBox
from prism.config import Settings
from prism.crypto.keyring import (
    KeyUnavailable,
    KmsKeys,
    LocalKeyring,
    add_key,
    file_keyring,
    key_id,
)
from prism.db import migrations
from prism.errors import ServiceUnavailable
from prism.models.documents import Section
from prism.models.enums import Classification, Role
from prism.services import Services
from tests.conftest import NewDatabase, app_with, client_of
from tests.factories import Tenant, add_document, codes, gid, gql, make_tenant
from tests.pipeline_helpers import run_jobs
from tests.test_gdpr import _export, _person
from tests.test_gdpr import _upload as _upload_for_export
from tests.test_mfa import _code, _enrol, _login
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
    # KMS refusing (another organization's context, an unknown key) is an unavailable key
    with pytest.raises(KeyUnavailable):
        await kms_keys.unwrap(kek, wrapped, b"org-b")
    with pytest.raises(KeyUnavailable):
        await KmsKeys(str(uuid.uuid4()), region="us-east-1", endpoint_url=s3_endpoint).wrap(
            b"d" * 32, b"org-a"
        )


def _prism_unchecked(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "prism.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


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
        # and `keys status` shows every data key under the new KEK (exit 0) ...
        status = json.loads(_prism("keys", "status", "--json", env=env).stdout)
        assert list(status["data_keys"]) == [status["current"]]
        assert str(tenant.org_id) in status["data_keys"][status["current"]]

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
    # ... while a KEK added but not yet rotated to leaves a data key behind (exit 1)
    add_key(tmp_path / "keyring.json")
    pending = _prism_unchecked("keys", "status", "--json", env=env)
    assert pending.returncode == 1
    assert str(tenant.org_id) in json.loads(pending.stdout)["data_keys"][new_kek]
    _prism("keys", "rotate", env=env)
    # ... and a process that holds only the new KEK reads too
    keyring = json.loads((tmp_path / "keyring.json").read_text())
    keyring["keys"] = {keyring["current"]: keyring["keys"][keyring["current"]]}
    (tmp_path / "keyring.json").write_text(json.dumps(keyring))
    after = bootstrap.build_services(own, url)
    try:
        assert await _clear_text(after, tenant, document.id)
    finally:
        await after.close()


async def _clear_text(services: Services, tenant: Tenant, document_id: uuid.UUID) -> bool:
    async with services.db.transaction(tenant.org_id) as session:
        sections = list(
            await session.scalars(sa.select(Section).where(Section.document_id == document_id))
        )
        await services.envelope.open_sections(session, sections)
    names = {s.name for s in sections}
    return any("unlimited liability" in s.content for s in sections) and "2. Liability" in names


async def test_a_data_key_first_used_in_a_rolled_back_transaction_still_opens(
    services: Services, settings: Settings, tenant: Tenant
) -> None:
    envelope = services.envelope
    with pytest.raises(RuntimeError):
        async with services.db.transaction(tenant.org_id) as session:
            await envelope.seal(session, tenant.org_id, b"first", b"c")
            raise RuntimeError("the caller's transaction fails")
    async with services.db.transaction(tenant.org_id) as session:
        sealed = await envelope.seal(session, tenant.org_id, b"second", b"c")
    restarted = bootstrap.envelope(settings, services.db)  # another process, nothing cached
    async with services.db.transaction(tenant.org_id) as session:
        assert await restarted.open(session, tenant.org_id, sealed, b"c") == b"second"


# --- online rotation: running processes follow the keyring -----------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # a file, not a pipe: a full pipe would stall the server
        return subprocess.Popen(
            [sys.executable, "-m", "prism.cli", "serve"],
            env={**env, "PRISM_PORT": str(port)},
            stdout=out,
            stderr=out,
        )


async def _ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:
        for _ in range(300):
            assert process.poll() is None, log.read_text()  # noqa: ASYNC240 - a failed start
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"server did not start: {log.read_text()}")  # noqa: ASYNC240


async def _served_text(url: str, token: str, document_id: uuid.UUID) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        return await gql(http, SECTIONS, {"id": gid("Document", document_id)}, token=token)


def _readable(body: dict[str, object]) -> bool:
    data = body.get("data") or {}
    document = data.get("document") if isinstance(data, dict) else None
    if not isinstance(document, dict):
        return False
    edges = document["sections"]["edges"]
    return any("unlimited liability" in e["node"]["content"] for e in edges)


async def test_rotation_is_online_for_two_running_server_processes(
    new_database: NewDatabase, settings: Settings, tmp_path: Path
) -> None:
    # given: two `prism serve` processes on one database and one keyring file, and three
    # organizations with RESTRICTED documents; each process has read one organization
    url = await new_database()
    await asyncio.to_thread(migrations.upgrade, url)
    own = settings.model_copy(update={"database_url": SecretStr(url), "data_dir": tmp_path})
    setup = bootstrap.build_services(own, url)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        tenants = [await make_tenant(setup) for _ in range(3)]
        documents = [
            await add_document(setup, t, classification=Classification.RESTRICTED) for t in tenants
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
        env.update(
            PRISM_DATABASE_URL=url,
            PRISM_DATA_DIR=str(tmp_path),
            PRISM_LOG_LEVEL="WARNING",
            PRISM_JWT_SECRET="j" * 40,
        )
        urls = []
        for n in range(2):
            port = _free_port()
            log = tmp_path / f"serve-{n}.log"
            servers.append(_serve(env, port, log))
            urls.append(f"http://127.0.0.1:{port}")
        for n, server_url in enumerate(urls):
            await _ready(server_url, servers[n], tmp_path / f"serve-{n}.log")
        admin = [t.tokens[Role.ADMIN] for t in tenants]
        for n, server_url in enumerate(urls):
            assert _readable(await _served_text(server_url, admin[n], documents[n].id))

        # when: a new KEK is made current and every data key re-wrapped with it, twice
        for _ in range(2):
            _prism("keys", "rotate", "--new-kek", env=env)

            # then: both processes read every organization's RESTRICTED text, without a
            # restart (keys neither had cached are unwrapped with the KEK just added)
            for server_url in urls:
                for tenant, document in zip(tenants, documents, strict=True):
                    body = await _served_text(server_url, tenant.tokens[Role.ADMIN], document.id)
                    assert _readable(body), (server_url, body)

        # and: data sealed after the rotation (a new organization's first data key, wrapped
        # by a process that read the keyring before the rotation) is readable by both
        late = await make_tenant(setup)
        late_document = await add_document(setup, late, classification=Classification.RESTRICTED)
        async with setup.db.transaction(late.org_id) as session:
            kek = await session.scalar(
                sa.text("SELECT kek_id FROM data_keys WHERE organization_id = :o"),
                {"o": late.org_id},
            )
        current = json.loads((tmp_path / "keyring.json").read_text())["current"]
        assert kek == current
        for server_url in urls:
            body = await _served_text(server_url, late.tokens[Role.ADMIN], late_document.id)
            assert _readable(body), body
        for n in range(2):
            assert "Traceback" not in (tmp_path / f"serve-{n}.log").read_text()
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=30)
        await setup.close()


async def test_a_key_that_cannot_be_found_is_service_unavailable_not_internal(
    services: Services, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    # given: RESTRICTED text whose data key names a KEK nobody holds (the API process has
    # not opened this organization's key before: the tenant is new)
    document = await add_document(services, tenant, classification=Classification.RESTRICTED)
    async with services.db.transaction(tenant.org_id) as session:
        await session.execute(
            sa.text("UPDATE data_keys SET kek_id = 'local:00000000' WHERE organization_id = :o"),
            {"o": tenant.org_id},
        )
    admin = tenant.tokens[Role.ADMIN]
    for query in (SECTIONS, FINDINGS):
        body = await gql(client, query, {"id": gid("Document", document.id)}, token=admin)
        assert body.get("errors"), body
        assert {e["extensions"]["code"] for e in body["errors"]} == {"SERVICE_UNAVAILABLE"}
        assert "local:" not in json.dumps(body)  # the reason is logged, not told


def test_an_mfa_secret_sealed_with_an_unknown_key_is_service_unavailable() -> None:
    """The MFA box's key (PRISM_ENCRYPTION_KEY) rotates by restarting with the old key in
    PRISM_ENCRYPTION_RETIRED_KEYS; a process that does not hold a key answers with an outage."""
    old, new = os.urandom(32), os.urandom(32)
    sealed = SecretBox(new, (old,)).seal(b"totp secret", b"ctx")
    assert SecretBox(old, (new,)).open(sealed, b"ctx") == b"totp secret"  # retired opens
    with pytest.raises(ServiceUnavailable):
        SecretBox(old).open(sealed, b"ctx")


async def test_mfa_keeps_working_after_the_encryption_key_is_rotated(
    client: httpx.AsyncClient, settings: Settings, database_url: str, tenant: Tenant
) -> None:
    """PRISM_ENCRYPTION_KEY rotated (the old key moved to PRISM_ENCRYPTION_RETIRED_KEYS): the
    TOTP secret sealed under the old key opens, and backup codes hashed under it still work."""
    # given: MFA turned on under the server's current key
    email = tenant.email(Role.REVIEWER)
    secret, backup = await _enrol(client, email)
    old = bootstrap.server_key(settings)
    rotated = settings.model_copy(
        update={
            "encryption_key": SecretStr(os.urandom(32).hex()),
            "encryption_retired_keys": SecretStr(old.hex()),
        }
    )
    # when: a process configured with the new key signs the user in
    async with app_with(rotated, database_url) as app, client_of(app) as after:
        # then: a backup code issued before the rotation is accepted (once) ...
        assert (await _login(after, email, backup[0])).get("errors") is None
        assert codes(await _login(after, email, backup[0])) == ["UNAUTHENTICATED"]
        # ... and so is a TOTP code (the secret opens with the retired key)
        assert (await _login(after, email, _code(secret, 1))).get("errors") is None


async def test_an_export_download_whose_key_cannot_be_found_is_service_unavailable(
    client: httpx.AsyncClient,
    services: Services,
    settings: Settings,
    database_url: str,
    tenant: Tenant,
) -> None:
    # given: a finished personal-data export (the bundle sealed with the data key) ...
    user, token, _ = await _person(services, tenant)
    await _upload_for_export(client, token, f"Notice {uuid.uuid4()}\n", "notice.txt")
    await run_jobs(services)
    export = await _export(client, services, token, gid("User", user.id))
    url = urlsplit(export["downloadUrl"])
    # ... whose data key now names a KEK nobody holds
    async with services.db.transaction(tenant.org_id) as session:
        await session.execute(
            sa.text("UPDATE data_keys SET kek_id = 'local:00000000' WHERE organization_id = :o"),
            {"o": tenant.org_id},
        )
    # when: a process that has not opened that key serves the link
    async with app_with(settings, database_url) as app, client_of(app) as fresh:
        response = await fresh.get(f"{url.path}?{url.query}")
    # then: an outage, said as such, without the reason
    assert response.status_code == 503
    assert response.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert "local:" not in response.text


# --- the keyring file under concurrent writers and bad contents ------------------------------


def test_two_concurrent_kek_additions_both_keep_their_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rotation B starts while rotation A is between reading and writing the keyring file: B
    waits for A's lock, then adds to A's file; neither key is lost."""
    import threading

    from prism.crypto import keyring as keyring_module

    path = tmp_path / "keyring.json"
    file_keyring(path, os.urandom(32))
    real_read = keyring_module._read_file
    other: dict[str, str] = {}

    def read_then_let_b_run(p: Path) -> dict[str, object]:
        data = real_read(p)
        if "thread" not in other:
            other["thread"] = "started"
            b = threading.Thread(target=lambda: other.update(added=add_key(p)))
            b.start()
            b.join(timeout=1.0)  # on an unlocked file B reads, adds and writes meanwhile
            monkeypatch.setattr(keyring_module, "_b", b, raising=False)
        return data

    monkeypatch.setattr(keyring_module, "_read_file", read_then_let_b_run)
    a = add_key(path)
    keyring_module._b.join(timeout=10)  # type: ignore[attr-defined]
    keys = json.loads(path.read_text())["keys"]
    assert a in keys
    assert other["added"] in keys
    assert json.loads(path.read_text())["current"] == other["added"]  # B wrote last
    assert stat.S_IMODE(path.with_name("keyring.json.lock").stat().st_mode) == 0o600


def test_many_processes_adding_keks_at_once_keep_every_key(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    file_keyring(path, os.urandom(32))
    code = (
        "import sys; from pathlib import Path; from prism.crypto.keyring import add_key;"
        "print(add_key(Path(sys.argv[1])))"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    added = {run.communicate(timeout=60)[0].strip() for run in runs}
    assert len(added) == 6
    assert added <= set(json.loads(path.read_text())["keys"])


@pytest.mark.parametrize(
    "spoil",
    [
        "short current key",
        "short retired key",
        "not hex",
        "current not among the keys",
        "not JSON",
        "keys not a mapping",
    ],
)
async def test_an_invalid_keyring_file_is_not_adopted_and_the_keys_held_keep_working(
    tmp_path: Path, spoil: str
) -> None:
    path = tmp_path / "keyring.json"
    seed = os.urandom(32)
    ring = file_keyring(path, seed)
    kek, wrapped = await ring.wrap(b"k" * 32, b"ctx")
    data = json.loads(path.read_text())
    if spoil == "short current key":
        data["keys"]["local:short"], data["current"] = "ab" * 16, "local:short"
    elif spoil == "short retired key":
        data["keys"]["local:short"] = "ab" * 16
        fresh = os.urandom(32)
        data["keys"][key_id(fresh)], data["current"] = fresh.hex(), key_id(fresh)
    elif spoil == "not hex":
        data["keys"]["local:x"], data["current"] = "zz" * 32, "local:x"
    elif spoil == "current not among the keys":
        data["current"] = "local:nothere"
    elif spoil == "keys not a mapping":
        data["keys"] = ["ab" * 32]
    text = "{not json" if spoil == "not JSON" else json.dumps(data)
    path.write_text(text)
    # the file is read again (it changed) but nothing of it is adopted
    assert ring.refresh() is False
    assert ring.current_id == key_id(seed)
    assert await ring.wrap(b"k" * 32, b"ctx") != (None, None)
    assert (await ring.wrap(b"k" * 32, b"ctx"))[0] == key_id(seed)
    assert await ring.unwrap(kek, wrapped, b"ctx") == b"k" * 32
    # a key nobody holds is an outage (SERVICE_UNAVAILABLE), never a ValueError
    with pytest.raises(KeyUnavailable):
        await ring.unwrap("local:unknown", wrapped, b"ctx")
    with pytest.raises(KeyUnavailable):
        await ring.unwrap(kek, b"short", b"ctx")


def test_a_rotation_while_a_process_reads_the_keyring_is_noticed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The change stamp is taken before the file is read: a KEK added between the read and
    the stamp is picked up by the next refresh."""
    from prism.crypto import keyring as keyring_module

    path = tmp_path / "keyring.json"
    file_keyring(path, os.urandom(32))
    real_read = keyring_module._read_file
    rotated: dict[str, str] = {}

    def read_then_rotate(p: Path) -> dict[str, object]:
        data = real_read(p)
        if not rotated:
            rotated["kek"] = "pending"
            rotated["kek"] = add_key(p)
        return data

    monkeypatch.setattr(keyring_module, "_read_file", read_then_rotate)
    ring = file_keyring(path, os.urandom(32))
    assert ring.current_id == rotated["kek"]


async def test_a_data_key_created_during_a_rotation_ends_under_the_new_kek(
    new_database: NewDatabase,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server wraps a new data key with the KEK current then; the operator adds a KEK and
    rotates before the server commits. The key still ends under the new KEK, and
    ``keys status`` shows no data key left under the old one."""
    from prism.crypto import envelope as crypto_envelope
    from prism.crypto import keyring as keyring_module
    from prism.models import data_keys

    url = await new_database()
    await asyncio.to_thread(migrations.upgrade, url)
    own = settings.model_copy(update={"database_url": SecretStr(url), "data_dir": tmp_path})
    services = bootstrap.build_services(own, url)
    try:
        tenant = await make_tenant(services)
        envelope = services.envelope
        other = await make_tenant(services)  # its data key is made before the rotation
        async with services.db.transaction(other.org_id) as session:
            await envelope.stream_key(session, other.org_id)
        real_insert = data_keys.insert_data_key
        state: dict[str, object] = {}

        async def insert_after_a_rotation(session: object, **values: object) -> object:
            if not state:
                state["new"] = keyring_module.add_key(tmp_path / keyring_module.KEYRING_FILE)
                cli = bootstrap.build_services(own, url)
                try:
                    state["changed"] = await crypto_envelope.rotate(cli.db, cli.envelope)
                finally:
                    await cli.close()
            return await real_insert(session, **values)  # type: ignore[arg-type]

        monkeypatch.setattr(data_keys, "insert_data_key", insert_after_a_rotation)
        async with services.db.transaction(tenant.org_id) as session:
            await envelope.stream_key(session, tenant.org_id)
        async with services.db.transaction(tenant.org_id) as session:
            row = await data_keys.read_data_key(session, tenant.org_id)
        assert row is not None
        assert row.kek_id == state["new"]
        status = await crypto_envelope.key_status(services.db, envelope)
        assert set(status) == {state["new"]}
        assert {tenant.org_id, other.org_id} <= set(status[str(state["new"])])
    finally:
        await services.close()
