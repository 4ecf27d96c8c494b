"""``prism keys`` and ``originals``: encryption keys and the sealing of stored originals."""

from __future__ import annotations

import sys
from typing import Any

import click

from prism import bootstrap
from prism.cli.app import console, emit, main, with_services
from prism.config import Settings
from prism.services import Services


@main.group()
def keys() -> None:
    """Encryption keys: organizations' data keys and the keys that wrap them."""


@keys.command("rotate")
@click.option(
    "--new-kek",
    is_flag=True,
    help="First add a new key-encryption key to PRISM_DATA_DIR/keyring.json and make it "
    "current (the local keyring file only; with PRISM_ENCRYPTION_KEY or PRISM_KMS_KEY_ID, "
    "change the setting instead).",
)
def keys_rotate(new_kek: bool) -> None:
    """Re-wrap every organization's data key with the current key-encryption key. Data stays
    as it is and servers keep running: old and new keys both unwrap until this finishes."""
    from prism.crypto import envelope as crypto_envelope
    from prism.crypto import keyring

    settings = Settings()
    if new_kek:
        if settings.encryption_key is not None or settings.kms_key_id:
            console.print(
                "[red]error:[/red] --new-kek manages the keyring file; with "
                "PRISM_ENCRYPTION_KEY set, move it to PRISM_ENCRYPTION_RETIRED_KEYS and set a "
                "new one (with PRISM_KMS_KEY_ID, name the new KMS key) before rotating."
            )
            sys.exit(1)
        keyring.file_keyring(
            settings.data_dir / keyring.KEYRING_FILE, bootstrap.server_key(settings)
        )
        added = keyring.add_key(settings.data_dir / keyring.KEYRING_FILE)
        console.print(f"New key-encryption key {added} is current.")

    async def work(services: Services) -> list[tuple[Any, str, str]]:
        return await crypto_envelope.rotate(services.db, services.envelope)

    changed = with_services(work)
    for organization_id, old, new in changed:
        click.echo(f"{organization_id}: {old} -> {new}")
    console.print(f"Re-wrapped {len(changed)} data keys.")


@keys.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the data keys per KEK as JSON.")
def keys_status(as_json: bool) -> None:
    """Data keys per key-encryption key. A retired KEK may be removed from the keyring only
    when it wraps none; exits 1 while any data key is under a KEK that is not current."""
    from prism.crypto import envelope as crypto_envelope

    async def work(services: Services) -> tuple[str, dict[str, list[Any]]]:
        envelope = services.envelope
        return envelope.keks.current_id, await crypto_envelope.key_status(services.db, envelope)

    current, by_kek = with_services(work)
    stale = {kek: orgs for kek, orgs in by_kek.items() if kek != current}
    body = {
        "current": current,
        "data_keys": {kek: [str(o) for o in orgs] for kek, orgs in by_kek.items()},
    }
    lines = [f"Current key-encryption key: {current}"]
    for kek, orgs in sorted(by_kek.items()):
        lines.append(f"{kek}: {len(orgs)} data keys" + (" (current)" if kek == current else ""))
    lines.append(
        f"{sum(len(o) for o in stale.values())} data keys under a KEK that is not current"
        + ("; run `prism keys rotate`." if stale else ".")
    )
    emit(body, as_json, "\n".join(lines))
    if stale:
        sys.exit(1)


@main.group()
def originals() -> None:
    """Stored originals (uploaded files) in the object store."""


@originals.command("seal")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def originals_seal(as_json: bool) -> None:
    """Seal the stored files of CONFIDENTIAL and RESTRICTED documents that are still in the
    clear (stored before sealing existed) with their organization's data key. Safe to re-run:
    sealed files are recognised by their header and skipped, so an interrupted run resumes."""
    from prism.documents import originals as originals_module

    async def work(services: Services) -> originals_module.SealReport:
        return await originals_module.seal_existing(
            services.db, services.objects, services.envelope
        )

    report = with_services(work)
    emit(
        report.as_json(),
        as_json,
        f"Originals: {report.sealed} sealed now, {report.already} sealed already, "
        f"{report.missing} missing, {report.failed} failed (see the log; run again), of "
        f"{report.examined} ({report.organizations} organizations).",
    )
    if report.failed:
        sys.exit(1)
