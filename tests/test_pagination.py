"""Keyset pagination: edges, orderings, bad cursors and page sizes."""

from __future__ import annotations

import httpx
import pytest

from prism.models.enums import Role
from prism.services import Services
from tests.factories import Tenant, add_document, codes, gql

PAGE = """query($first: Int, $after: String, $order: DocumentOrder) {
  documents(first: $first, after: $after, orderBy: $order) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { filename fileSize } }
  }
}"""


async def _walk(client: httpx.AsyncClient, token: str, order: dict | None, first: int) -> list[str]:  # type: ignore[type-arg]
    seen: list[str] = []
    after = None
    while True:
        body = await gql(
            client, PAGE, {"first": first, "after": after, "order": order}, token=token
        )
        assert body.get("errors") is None, body
        page = body["data"]["documents"]
        seen += [e["node"]["filename"] for e in page["edges"]]
        assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
        if not page["pageInfo"]["hasNextPage"]:
            return seen
        after = page["pageInfo"]["endCursor"]


async def test_empty_list(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = await gql(client, PAGE, {"first": 10}, token=tenant.tokens[Role.ADMIN])
    page = body["data"]["documents"]
    assert page == {
        "totalCount": 0,
        "pageInfo": {
            "hasNextPage": False,
            "hasPreviousPage": False,
            "startCursor": None,
            "endCursor": None,
        },
        "edges": [],
    }


@pytest.mark.parametrize(
    ("order", "key"),
    [
        (None, None),
        ({"field": "FILENAME", "direction": "ASC"}, "filename"),
        ({"field": "FILENAME", "direction": "DESC"}, "filename"),
        ({"field": "CREATED_AT", "direction": "ASC"}, None),
        ({"field": "FILE_SIZE", "direction": "DESC"}, None),
        ({"field": "RISK", "direction": "DESC"}, None),
    ],
)
async def test_pages_cover_every_row_once_in_order(
    client: httpx.AsyncClient,
    services: Services,
    tenant: Tenant,
    order: dict | None,
    key: str | None,  # type: ignore[type-arg]
) -> None:
    names = [f"doc-{i:02d}.txt" for i in range(7)]
    for i, name in enumerate(names):
        await add_document(
            services,
            tenant,
            filename=name,
            text="x " * (i + 1) if i % 2 else "The supplier accepts unlimited liability.",
        )
    seen = await _walk(client, tenant.tokens[Role.ADMIN], order, first=3)
    assert sorted(seen) == names
    assert len(seen) == len(set(seen))
    if key == "filename":
        assert seen == sorted(names, reverse=order["direction"] == "DESC")  # type: ignore[index]
    if order is None:  # default: newest first
        assert seen == list(reversed(names))


async def test_last_page_exactly_full(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    for i in range(4):
        await add_document(services, tenant, filename=f"f{i}.txt")
    body = await gql(client, PAGE, {"first": 4}, token=tenant.tokens[Role.ADMIN])
    assert body["data"]["documents"]["pageInfo"]["hasNextPage"] is False
    assert len(body["data"]["documents"]["edges"]) == 4


@pytest.mark.parametrize("first", [-1, 101])
async def test_page_size_out_of_range(
    client: httpx.AsyncClient, tenant: Tenant, first: int
) -> None:
    body = await gql(client, PAGE, {"first": first}, token=tenant.tokens[Role.ADMIN])
    assert codes(body) == ["BAD_USER_INPUT"]


async def test_invalid_cursors(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    for i in range(2):
        await add_document(services, tenant, filename=f"c{i}.txt")
    token = tenant.tokens[Role.ADMIN]
    by_name = {"field": "FILENAME", "direction": "ASC"}
    first_page = await gql(client, PAGE, {"first": 1, "order": by_name}, token=token)
    cursor = first_page["data"]["documents"]["pageInfo"]["endCursor"]
    for after, order in (("garbage!", None), ("eyJ4IjoxfQ", None), (cursor, None)):
        # the last: a cursor of another ordering is refused, not misread
        body = await gql(client, PAGE, {"first": 1, "after": after, "order": order}, token=token)
        assert codes(body) == ["BAD_USER_INPUT"], after
    nested = """query($after: String) { documents(first: 1) { edges { node {
        sections(first: 1, after: $after) { edges { cursor } } } } } }"""
    assert codes(await gql(client, nested, {"after": cursor}, token=token)) == ["BAD_USER_INPUT"]


async def test_nested_sections_page_per_document(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    await add_document(services, tenant)
    query = """query($after: String) { documents(first: 1) { edges { node {
        sections(first: 2, after: $after) {
          pageInfo { hasNextPage endCursor } edges { node { order } } }
    } } } }"""
    token = tenant.tokens[Role.ADMIN]
    first = (await gql(client, query, token=token))["data"]["documents"]["edges"][0]["node"][
        "sections"
    ]
    assert [e["node"]["order"] for e in first["edges"]] == [0, 1]
    assert first["pageInfo"]["hasNextPage"] is True
    second = await gql(client, query, {"after": first["pageInfo"]["endCursor"]}, token=token)
    rest = second["data"]["documents"]["edges"][0]["node"]["sections"]
    assert [e["node"]["order"] for e in rest["edges"]] == [2]
    assert rest["pageInfo"]["hasNextPage"] is False
