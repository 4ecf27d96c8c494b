"""The lean path of a planned answer: PostgreSQL's JSON written as it came, with the same
answer, NOT_FOUND, cost and refund as before."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from prism.execution.cost import actual
from prism.execution.ids import to_global_id
from prism.models.enums import Role
from prism.services import Services
from tests.factories import Tenant, add_document
from tests.test_compiled import OPERATIONS
from tests.test_persisted import _call, _register


async def test_planned_answers_report_the_objects_they_hold(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    documents = [await add_document(services, tenant) for _ in range(3)]
    registered = await _register(services, OPERATIONS)
    token = tenant.tokens[Role.REVIEWER]
    one = to_global_id("Document", documents[0].id)
    calls: list[tuple[str, dict[str, Any]]] = [
        ("Nested", {"first": 3}),
        ("Nested", {"first": 0}),
        ("Page", {"first": 2}),
        ("One", {"id": one}),
        ("Count", {}),
        ("People", {}),
    ]
    for name, variables in calls:
        caller = tenant.tokens[Role.ADMIN] if name == "People" else token
        body = await _call(client, caller, registered[name], variables)
        assert body["extensions"]["execution"] == {"path": "compiled"}, (name, body)
        assert not body.get("errors"), body
        assert body["extensions"]["cost"]["actual"] == actual(body["data"]), (name, body)
        assert body["extensions"]["cost"]["actual"] <= body["extensions"]["cost"]["requested"]


async def test_a_missing_document_is_not_found_on_the_interpreted_path(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    registered = await _register(services, OPERATIONS)
    missing = to_global_id("Document", uuid.uuid4())
    body = await _call(client, tenant.tokens[Role.REVIEWER], registered["One"], {"id": missing})
    assert body["extensions"]["execution"] == {"path": "interpreted", "reason": "not found"}
    assert [e["extensions"]["code"] for e in body["errors"]] == ["NOT_FOUND"]
    assert body["errors"][0]["path"] == ["node"]
