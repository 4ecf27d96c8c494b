"""Search operations against a real OpenSearch node: an outage (the node's port closed by a
TCP relay we control) and recovery, and `prism search reindex` swapping the alias."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from prism.config import SearchFallback, Settings
from prism.models.enums import Classification, JobState, Role
from prism.models.jobs import Job
from prism.models.scope import Scope
from prism.search import SearchRequest, mandatory_filter
from prism.search.opensearch import OpenSearchBackend
from prism.services import Services
from tests.factories import Tenant, add_document, codes, gid, gql, make_tenant
from tests.search_helpers import opensearch_settings, running


class Relay:
    """A TCP relay in front of the node: stopping it is the node going away for Prism
    (connections refused, open ones cut); starting it again on the same port is recovery."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target_host, self.target_port = parts.hostname or "127.0.0.1", parts.port or 9200
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            writer.close()
            up_writer.close()
            self._tasks.discard(task)


@pytest.fixture
async def relay(opensearch_url: str) -> AsyncIterator[Relay]:
    proxy = Relay(opensearch_url)
    await proxy.start()
    yield proxy
    await proxy.stop()


SEARCH = """query($q: String!, $f: SearchFilter) {
  search(query: $q, filter: $f) { totalCount edges { node { document { id } } } }
}"""
UPDATE = """mutation($input: UpdateDocumentInput!) {
  updateDocument(input: $input) { id classification }
}"""
DELETE = """mutation($id: ID!) { deleteDocument(id: $id) { deletedId } }"""


async def _index_jobs(services: Services, tenant: Tenant) -> list[Job]:
    async with services.db.transaction(tenant.org_id) as session:
        return list(
            await session.scalars(
                sa.select(Job).where(Job.kind == "search.index").order_by(Job.created_at)
            )
        )


async def _due_now(services: Services, tenant: Tenant) -> None:
    """Skip the backoff wait of failed jobs (what time would do)."""
    async with services.db.transaction(tenant.org_id) as session:
        await session.execute(
            sa.update(Job).where(Job.state == JobState.FAILED).values(run_at=sa.func.now())
        )


async def test_an_outage_loses_nothing(
    relay: Relay, settings: Settings, database_url: str, services: Services
) -> None:
    tenant = await make_tenant(services)
    word = f"outage{uuid.uuid4().hex[:8]}"
    text = f"NOTICE\n\n1. Clause\nThe {word} clause applies.\n"
    kept = await add_document(services, tenant, text=text, classification=Classification.INTERNAL)
    dropped = await add_document(
        services, tenant, text=text, classification=Classification.INTERNAL
    )
    alias = f"prism-test-{uuid.uuid4().hex[:10]}"
    strict = opensearch_settings(settings, relay.url, alias=alias)
    lenient = opensearch_settings(
        settings, relay.url, alias=alias, fallback=SearchFallback.POSTGRES
    )
    admin = tenant.tokens[Role.ADMIN]
    async with (
        running(strict, database_url, "opensearch") as stack,
        running(lenient, database_url, "opensearch") as fallback,
    ):
        await stack.index([kept, dropped])
        before = await gql(stack.client, SEARCH, {"q": word}, token=admin)
        assert before["data"]["search"]["totalCount"] == 2
        # when OpenSearch goes away
        await relay.stop()
        # then mutations still succeed, their index jobs queued with them
        changed = await gql(
            stack.client,
            UPDATE,
            {"input": {"id": gid("Document", kept.id), "classification": "PUBLIC"}},
            token=admin,
        )
        assert changed.get("errors") is None, changed
        deleted = await gql(stack.client, DELETE, {"id": gid("Document", dropped.id)}, token=admin)
        assert deleted.get("errors") is None, deleted
        # and the index jobs fail and wait to be retried, the documents untouched
        await stack.run_jobs(refresh=False)
        jobs = await _index_jobs(services, tenant)
        assert [j.state for j in jobs] == [JobState.FAILED, JobState.FAILED]
        assert all("SearchUnavailable" in (j.last_error or "") for j in jobs)
        assert all(j.run_at > j.updated_at for j in jobs)  # after a backoff
        # search answers SERVICE_UNAVAILABLE ...
        down = await gql(stack.client, SEARCH, {"q": word}, token=admin)
        assert codes(down) == ["SERVICE_UNAVAILABLE"]
        assert "retry" in down["errors"][0]["message"]
        # ... or, with the PostgreSQL fallback, PostgreSQL's answer, saying so
        answered = await gql(fallback.client, SEARCH, {"q": word}, token=admin)
        assert answered.get("errors") is None, answered
        assert answered["data"]["search"]["totalCount"] == 1  # current state: one deleted
        notice = answered["extensions"]["search"]
        assert notice["backend"] == "postgres"
        assert notice["fallback"] is True
        assert "OpenSearch" in notice["reason"]
        # when OpenSearch is back, the retried jobs catch the index up
        await relay.start()
        await _due_now(services, tenant)
        await stack.run_jobs()
        jobs = await _index_jobs(services, tenant)
        # (the attempt that met the outage was given back: OpenSearch was away, not at fault)
        assert [(j.state, j.attempts) for j in jobs] == [(JobState.SUCCEEDED, 1)] * 2
        after = await gql(
            stack.client, SEARCH, {"q": word, "f": {"classification": ["PUBLIC"]}}, token=admin
        )
        assert after.get("errors") is None, after
        assert [e["node"]["document"]["id"] for e in after["data"]["search"]["edges"]] == [
            gid("Document", kept.id)
        ]
        # the index itself holds the new state: the deleted document is gone
        page = await stack.services.search.primary.search(
            mandatory_filter(Scope.system(tenant.org_id)), SearchRequest.parse(word)
        )
        assert {h.document_id for h in page.hits} == {kept.id}


def _reindex(settings: Settings, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    assert settings.opensearch_url is not None
    env |= {
        "PRISM_DATABASE_URL": database_url,
        "PRISM_OPENSEARCH_URL": settings.opensearch_url.get_secret_value(),
        "PRISM_OPENSEARCH_INDEX": settings.opensearch_index,
        "PRISM_OPENSEARCH_REPLICAS": "0",
        "PRISM_LOG_LEVEL": "WARNING",
        "COLUMNS": "120",
    }
    return subprocess.run(
        [sys.executable, "-m", "prism.cli", "search", "reindex", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def test_reindex_builds_a_new_index_and_swaps_the_alias(
    opensearch_url: str, settings: Settings, database_url: str, services: Services
) -> None:
    tenant = await make_tenant(services)
    word = f"reindex{uuid.uuid4().hex[:8]}"
    documents = [
        await add_document(services, tenant, text=f"NOTE\n\n1. Clause\nThe {word} clause {i}.\n")
        for i in range(3)
    ]
    configured = opensearch_settings(settings, opensearch_url)
    async with running(configured, database_url, "opensearch") as stack:
        # given an index that knows only one of the documents
        await stack.index(documents[:1])
        backend = stack.services.search.opensearch
        assert backend is not None
        old = await backend.indices_behind_alias()
        admin = tenant.tokens[Role.ADMIN]
        before = await gql(stack.client, SEARCH, {"q": word}, token=admin)
        assert before["data"]["search"]["totalCount"] == 1
        # when the operator reindexes
        done = await asyncio.to_thread(_reindex, configured, database_url)
        assert done.returncode == 0, done.stderr
        assert "Reindexed" in done.stderr
        assert "replaced" in done.stderr
        # then the alias points at a new index alone, the old one is gone, and all is found
        new = await backend.indices_behind_alias()
        assert len(new) == 1
        assert new != old
        assert new[0].startswith(f"{configured.opensearch_index}-2")
        assert not await backend.client.indices.exists(index=old[0])
        after = await gql(stack.client, SEARCH, {"q": word}, token=admin)
        assert after["data"]["search"]["totalCount"] == 3
        # and one organization reindexed in place keeps the alias where it is
        await backend.client.delete(
            index=backend.alias,
            id=str(await _first_section(services, tenant, documents[2].id)),
            params={"refresh": "true"},
        )
        assert (await gql(stack.client, SEARCH, {"q": word}, token=admin))["data"]["search"][
            "totalCount"
        ] == 2
        in_place = await asyncio.to_thread(
            _reindex, configured, database_url, "--org", str(tenant.org_id)
        )
        assert in_place.returncode == 0, in_place.stderr
        assert await backend.indices_behind_alias() == new
        final = await gql(stack.client, SEARCH, {"q": word}, token=admin)
        assert final["data"]["search"]["totalCount"] == 3


async def _first_section(services: Services, tenant: Tenant, document_id: uuid.UUID) -> uuid.UUID:
    from prism.models.documents import Section

    async with services.db.transaction(tenant.org_id) as session:
        found = await session.scalar(
            sa.select(Section.id).where(Section.document_id == document_id).order_by(Section.ord)
        )
    assert found is not None
    return found


async def test_reindex_gives_sections_from_before_search_their_text(services: Services) -> None:
    from prism.jobs.indexing import reindex
    from prism.models.documents import Section

    # given sections stored before search existed (no masked search text)
    tenant = await make_tenant(services)
    word = f"legacy{uuid.uuid4().hex[:8]}"
    document = await add_document(
        services, tenant, text=f"NOTE\n\n1. Clause\nThe {word} clause. Mail ann@example.com.\n"
    )
    async with services.db.transaction(tenant.org_id) as session:
        await session.execute(
            sa.update(Section).where(Section.document_id == document.id).values(search_text=None)
        )
    scope = mandatory_filter(Scope.system(tenant.org_id))
    assert (await services.search.postgres.search(scope, SearchRequest.parse(word))).hits == []
    # when the operator reindexes the organization (PostgreSQL only)
    progress = await reindex(services.db, services.search, organization_id=tenant.org_id)
    # then they are found, with their personal data masked in the searchable text
    assert progress.done == progress.total >= 1
    page = await services.search.postgres.search(scope, SearchRequest.parse(word))
    assert {h.document_id for h in page.hits} == {document.id}
    assert all("ann@example.com" not in h for hit in page.hits for h in hit.highlights)
    async with services.db.transaction(tenant.org_id) as session:
        texts = list(
            await session.scalars(
                sa.select(Section.search_text).where(Section.document_id == document.id)
            )
        )
    assert any(t and word in t and "[EMAIL]" in t and "ann@" not in t for t in texts), texts


async def _lose_everything(backend: OpenSearchBackend) -> None:
    """The node restarted empty, for this test's alias only: its indices (the alias goes with
    them) and its template are gone. Other people's indices on the shared node are untouched."""
    await backend.client.indices.delete(
        index=f"{backend.alias}-*", params={"ignore_unavailable": "true"}
    )
    await backend.client.indices.delete_index_template(
        name=f"{backend.alias}-template", params={"ignore": 404}
    )
    if await backend.client.indices.exists(index=backend.alias):
        await backend.client.indices.delete(index=backend.alias)


async def _concrete_indices(backend: OpenSearchBackend) -> dict[str, list[str]]:
    """Every index named after the alias (its own name included), with the aliases on it."""
    found = await backend.client.indices.get(
        index=f"{backend.alias},{backend.alias}-*",
        params={"ignore_unavailable": "true", "allow_no_indices": "true"},
    )
    return {name: sorted(value.get("aliases", {})) for name, value in found.items()}


async def test_a_node_restarted_empty_recovers_without_a_squatting_index(
    opensearch_url: str, settings: Settings, database_url: str, services: Services
) -> None:
    tenant = await make_tenant(services)
    word = f"restart{uuid.uuid4().hex[:8]}"
    text = f"NOTICE\n\n1. Clause\nThe {word} clause applies.\n"
    changed, untouched = [await add_document(services, tenant, text=text) for _ in range(2)]
    alias = f"prism-test-{uuid.uuid4().hex[:10]}"
    strict = opensearch_settings(settings, opensearch_url, alias=alias)
    lenient = opensearch_settings(
        settings, opensearch_url, alias=alias, fallback=SearchFallback.POSTGRES
    )
    admin = tenant.tokens[Role.ADMIN]
    async with (
        running(strict, database_url, "opensearch") as stack,
        running(lenient, database_url, "opensearch") as fallback,
    ):
        backend = stack.services.search.opensearch
        assert backend is not None
        await stack.index([changed, untouched])
        for client in (stack.client, fallback.client):
            found = await gql(client, SEARCH, {"q": word}, token=admin)
            assert found["data"]["search"]["totalCount"] == 2, found
        # when the node comes back empty
        await _lose_everything(backend)
        # then search gives a coded answer, or PostgreSQL's with the fallback
        down = await gql(stack.client, SEARCH, {"q": word}, token=admin)
        assert codes(down) == ["SERVICE_UNAVAILABLE"], down
        answered = await gql(fallback.client, SEARCH, {"q": word}, token=admin)
        assert answered.get("errors") is None, answered
        assert answered["data"]["search"]["totalCount"] == 2
        assert answered["extensions"]["search"]["fallback"] is True
        # one organization cannot refill a lost index: said in one line, nothing made
        in_place = await asyncio.to_thread(
            _reindex, strict, database_url, "--org", str(tenant.org_id)
        )
        assert in_place.returncode == 1
        assert "Traceback" not in in_place.stderr
        assert "prism search reindex" in in_place.stderr
        assert await _concrete_indices(backend) == {}
        # and the next index job rebuilds the template and the alias, never a plain index
        # named like the alias
        edited = await gql(
            stack.client,
            UPDATE,
            {"input": {"id": gid("Document", changed.id), "classification": "PUBLIC"}},
            token=admin,
        )
        assert edited.get("errors") is None, edited
        await stack.run_jobs()
        jobs = await _index_jobs(services, tenant)
        assert [j.state for j in jobs] == [JobState.SUCCEEDED], [j.last_error for j in jobs]
        indices = await _concrete_indices(backend)
        assert indices == {f"{alias}-initial": [alias]}
        assert await backend.client.indices.exists_index_template(name=f"{alias}-template")
        mapping = await backend.client.indices.get_mapping(index=alias)
        assert mapping[f"{alias}-initial"]["mappings"]["dynamic"] == "strict"
        # search answers again, from what was indexed since
        partial = await gql(stack.client, SEARCH, {"q": word}, token=admin)
        assert partial.get("errors") is None, partial
        assert partial["data"]["search"]["totalCount"] == 1
        # a reindex left halfway long ago (an orphan index of this alias) ...
        orphan = f"{alias}-20200101000000000000"
        await backend.client.indices.create(index=orphan)
        # the full reindex refills it and leaves only the new index behind the alias
        done = await asyncio.to_thread(_reindex, strict, database_url)
        assert done.returncode == 0, done.stderr
        indices = await _concrete_indices(backend)
        assert len(indices) == 1
        ((name, aliases),) = indices.items()
        assert name.startswith(f"{alias}-2")
        assert name != orphan
        assert aliases == [alias]
        complete = await gql(stack.client, SEARCH, {"q": word}, token=admin)
        assert complete["data"]["search"]["totalCount"] == 2


async def test_reindex_replaces_an_index_squatting_the_alias_name(
    opensearch_url: str, settings: Settings, database_url: str, services: Services
) -> None:
    tenant = await make_tenant(services)
    word = f"squat{uuid.uuid4().hex[:8]}"
    documents = [
        await add_document(services, tenant, text=f"NOTE\n\n1. Clause\nThe {word} clause {i}.\n")
        for i in range(2)
    ]
    alias = f"prism-test-{uuid.uuid4().hex[:10]}"
    strict = opensearch_settings(settings, opensearch_url, alias=alias)
    lenient = opensearch_settings(
        settings, opensearch_url, alias=alias, fallback=SearchFallback.POSTGRES
    )
    admin = tenant.tokens[Role.ADMIN]
    async with (
        running(strict, database_url, "opensearch") as stack,
        running(lenient, database_url, "opensearch") as fallback,
    ):
        backend = stack.services.search.opensearch
        assert backend is not None
        try:
            await stack.index(documents)
            for client in (stack.client, fallback.client):
                found = await gql(client, SEARCH, {"q": word}, token=admin)
                assert found["data"]["search"]["totalCount"] == 2, found
            # given the damage a write without require_alias did after the node lost its
            # data: a plain, dynamically mapped index named like the alias
            await _lose_everything(backend)
            await backend.client.index(
                index=alias,
                id=str(uuid.uuid4()),
                body={"section_id": str(uuid.uuid4()), "organization_id": str(tenant.org_id)},
                params={"refresh": "true"},
            )
            assert await _concrete_indices(backend) == {alias: []}
            # then search gives a coded answer (not INTERNAL), or PostgreSQL's
            down = await gql(stack.client, SEARCH, {"q": word}, token=admin)
            assert codes(down) == ["SERVICE_UNAVAILABLE"], down
            answered = await gql(fallback.client, SEARCH, {"q": word}, token=admin)
            assert answered.get("errors") is None, answered
            assert answered["data"]["search"]["totalCount"] == 2
            # and index jobs wait (to be retried), writing nothing into the squatter
            edited = await gql(
                stack.client,
                UPDATE,
                {"input": {"id": gid("Document", documents[0].id), "classification": "PUBLIC"}},
                token=admin,
            )
            assert edited.get("errors") is None, edited
            await stack.run_jobs(refresh=False)
            jobs = await _index_jobs(services, tenant)
            assert [j.state for j in jobs] == [JobState.FAILED]
            assert "SearchUnavailable" in (jobs[0].last_error or "")
            assert (await backend.client.count(index=alias))["count"] == 1
            # when the operator reindexes, the squatter is replaced by a proper index
            done = await asyncio.to_thread(_reindex, strict, database_url)
            assert done.returncode == 0, done.stderr
            indices = await _concrete_indices(backend)
            assert alias not in indices
            assert list(indices.values()) == [[alias]]
            # and search and index jobs work again
            after = await gql(stack.client, SEARCH, {"q": word}, token=admin)
            assert after.get("errors") is None, after
            assert after["data"]["search"]["totalCount"] == 2
            await _due_now(services, tenant)
            await stack.run_jobs()
            jobs = await _index_jobs(services, tenant)
            assert [j.state for j in jobs] == [JobState.SUCCEEDED]
            public = await gql(
                stack.client, SEARCH, {"q": word, "f": {"classification": ["PUBLIC"]}}, token=admin
            )
            assert public["data"]["search"]["totalCount"] == 1
        finally:
            await _lose_everything(backend)
