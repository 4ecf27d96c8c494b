"""OpenSearch going away and coming back empty under traffic, against Prism serving real HTTP
with its job worker in the same process.

The shared node is never stopped: Prism reaches it through a TCP relay of this test's own.
Stopping the relay is the node going away (connections refused, open ones cut); deleting this
test's alias's indices and template on the node while the relay is down, then starting the
relay again, is the node restarting empty. Meanwhile a few clients search, upload, update and
read. Every answer must be data or a coded error (503 SERVICE_UNAVAILABLE with Retry-After
while OpenSearch is away) within the request deadline; nothing acknowledged may be lost (it is
in PostgreSQL, and searchable once its index jobs ran, the rest after `prism search reindex`);
index jobs retried through the outage do not go DEAD; no plain index ever squats the alias's
name; and search answers again without Prism being restarted."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import sqlalchemy as sa

from prism.config import Settings
from prism.documents.processing import ANALYZE, EXTRACT, INDEX
from prism.execution.ids import from_global_id
from prism.models.documents import Document
from prism.models.enums import Classification, JobState, Role
from prism.models.jobs import Job
from prism.search.opensearch import OpenSearchBackend
from prism.services import Services
from tests.factories import Tenant, gid, make_tenant
from tests.pipeline_helpers import CSRF, UPLOAD
from tests.search_helpers import opensearch_settings
from tests.test_faults import ServedApp
from tests.test_search_ops import Relay, _concrete_indices, _lose_everything, _reindex

# The request deadline of the app under test, its OpenSearch client's timeout, and what a
# client may wait beyond them (the answer's trip, a loaded two-core machine).
DEADLINE = 4.0
OPENSEARCH_TIMEOUT = 2.0
SLACK = 2.5
OUTAGE_CODES = {"SERVICE_UNAVAILABLE"}
SEARCH = """query($q: String!, $f: SearchFilter, $first: Int, $after: String) {
  search(query: $q, filter: $f, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } edges { node { document { id } } }
  }
}"""
UPDATE = """mutation($input: UpdateDocumentInput!) {
  updateDocument(input: $input) { id classification }
}"""
READ = "query($id: ID!) { document(id: $id) { id classification processingStatus } }"
# The classifications the updater moves documents between (all visible to an ADMIN).
CYCLE = [Classification.PUBLIC, Classification.INTERNAL, Classification.CONFIDENTIAL]


class FreezingRelay(Relay):
    """The outage relay, which can also freeze: connections are accepted and nothing passes
    either way (a node that hangs), until it thaws; then the connections that hung are cut
    (what was sent into them is lost, as a partition that heals would lose it)."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.flowing = asyncio.Event()
        self.flowing.set()

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if not self.flowing.is_set():
                await self.flowing.wait()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                return
            try:
                await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            finally:
                up_writer.close()
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await src.read(65536):
                if not self.flowing.is_set():
                    await self.flowing.wait()
                    break
                dst.write(chunk)
                await dst.drain()
        dst.close()


@dataclass
class Answer:
    worker: str
    operation: str
    started: float
    elapsed: float
    status: int | None
    codes: list[str]
    retry_after: str | None
    retry_after_extension: object = None
    body: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.codes

    @property
    def ended(self) -> float:
        return self.started + self.elapsed


@dataclass
class Traffic:
    url: str
    token: str
    word: str
    seeds: list[uuid.UUID]
    answers: list[Answer] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    # Acknowledged changes: uploaded documents, and each document's last acknowledged class.
    uploaded: dict[uuid.UUID, float] = field(default_factory=dict)
    classified: dict[uuid.UUID, tuple[Classification, float]] = field(default_factory=dict)

    async def _send(
        self, http: httpx.AsyncClient, worker: str, operation: str, **kw: Any
    ) -> Answer:
        started = time.monotonic()
        try:
            response = await http.post("/graphql", **kw)
        except httpx.HTTPError as exc:
            answer = Answer(worker, operation, started, time.monotonic() - started, None, [], None)
            answer.problem = f"transport: {type(exc).__name__}"
            self.answers.append(answer)
            return answer
        body: dict[str, Any] = {}
        if response.headers.get("content-type", "").startswith("application/json"):
            body = orjson.loads(response.content)
        errors = body.get("errors") or []
        answer = Answer(
            worker,
            operation,
            started,
            time.monotonic() - started,
            response.status_code,
            [(e.get("extensions") or {}).get("code") for e in errors],
            response.headers.get("retry-after"),
            next(
                ((e.get("extensions") or {}).get("retryAfter") for e in errors),
                None,
            ),
            body,
        )
        self.answers.append(answer)
        return answer

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            timeout=DEADLINE + SLACK + 5,
            headers={"authorization": f"Bearer {self.token}"},
        )

    async def searcher(self, name: str) -> None:
        async with self._client() as http:
            while not self.stop.is_set():
                await self._send(
                    http, name, "search", json={"query": SEARCH, "variables": {"q": self.word}}
                )
                await asyncio.sleep(0.1)

    async def uploader(self, name: str) -> None:
        async with self._client() as http:
            n = 0
            while not self.stop.is_set():
                n += 1
                text = f"NOTICE\n\n1. Clause\nThe {self.word} clause {uuid.uuid4().hex} ({n}).\n"
                operations = {"query": UPLOAD, "variables": {"input": {"file": None}}}
                answer = await self._send(
                    http,
                    name,
                    "upload",
                    data={
                        "operations": orjson.dumps(operations).decode(),
                        "map": orjson.dumps({"0": ["variables.input.file"]}).decode(),
                    },
                    files={"0": (f"n{n}.txt", text.encode(), "text/plain")},
                    headers=CSRF,
                )
                if answer.ok:
                    document_id = answer.body["data"]["uploadDocument"]["document"]["id"]
                    self.uploaded[_uuid_of(document_id)] = answer.ended
                await asyncio.sleep(0.6)

    async def updater(self, name: str) -> None:
        async with self._client() as http:
            n = 0
            while not self.stop.is_set():
                n += 1
                document_id = self.seeds[n % len(self.seeds)]
                # Each pass over the seeds moves them all to the next classification.
                target = CYCLE[(n // len(self.seeds)) % len(CYCLE)]
                answer = await self._send(
                    http,
                    name,
                    "update",
                    json={
                        "query": UPDATE,
                        "variables": {
                            "input": {
                                "id": gid("Document", document_id),
                                "classification": target.value,
                            }
                        },
                    },
                )
                if answer.ok:
                    self.classified[document_id] = (target, answer.ended)
                await asyncio.sleep(0.3)

    async def reader(self, name: str) -> None:
        async with self._client() as http:
            n = 0
            while not self.stop.is_set():
                n += 1
                document_id = self.seeds[n % len(self.seeds)]
                await self._send(
                    http,
                    name,
                    "read",
                    json={"query": READ, "variables": {"id": gid("Document", document_id)}},
                )
                await asyncio.sleep(0.1)


def _uuid_of(global_id: str) -> uuid.UUID:
    return from_global_id(global_id)[1]


async def _searchable(http: httpx.AsyncClient, word: str) -> set[uuid.UUID]:
    """Every document a search for ``word`` finds, page by page (an outage fails the test)."""
    found: set[uuid.UUID] = set()
    after = None
    for _ in range(50):
        response = await http.post(
            "/graphql",
            json={"query": SEARCH, "variables": {"q": word, "first": 100, "after": after}},
        )
        body = response.json()
        assert response.status_code == 200, body
        assert not body.get("errors"), body
        page = body["data"]["search"]
        found |= {_uuid_of(e["node"]["document"]["id"]) for e in page["edges"]}
        if not page["pageInfo"]["hasNextPage"]:
            return found
        after = page["pageInfo"]["endCursor"]
    raise AssertionError("paging did not end")


async def _jobs(services: Services, tenant: Tenant) -> list[Job]:
    async with services.db.transaction(tenant.org_id) as session:
        return list(
            await session.scalars(
                sa.select(Job)
                .where(
                    Job.organization_id == tenant.org_id, Job.kind.in_([EXTRACT, ANALYZE, INDEX])
                )
                .order_by(Job.created_at)
            )
        )


async def _settle(services: Services, tenant: Tenant, within: float) -> list[Job]:
    """Wait until the served worker has run every job of the tenant, skipping the backoff
    waits of failed ones (what time would do)."""
    deadline = time.monotonic() + within
    while True:
        jobs = await _jobs(services, tenant)
        if all(j.state in (JobState.SUCCEEDED, JobState.DEAD) for j in jobs):
            return jobs
        if time.monotonic() > deadline:
            pending = [(j.kind, j.state, j.attempts, j.last_error) for j in jobs]
            raise AssertionError(f"jobs still pending: {pending}")
        async with services.db.transaction(tenant.org_id) as session:
            await session.execute(
                sa.update(Job)
                .where(
                    Job.organization_id == tenant.org_id,
                    Job.kind.in_([EXTRACT, ANALYZE, INDEX]),
                    Job.state == JobState.FAILED,
                )
                .values(run_at=sa.func.now())
            )
        await asyncio.sleep(0.5)


async def _index_holds(real: OpenSearchBackend, tenant: Tenant) -> dict[uuid.UUID, set[str]]:
    """What the node itself holds of the tenant under the alias: each document's
    classifications (a full reindex writes every organization of the database)."""
    await real.client.indices.refresh(index=real.alias)
    result = await real.client.search(
        index=real.alias,
        body={
            "size": 10_000,
            "query": {"term": {"organization_id": str(tenant.org_id)}},
            "_source": ["document_id", "classification"],
        },
    )
    held: dict[uuid.UUID, set[str]] = {}
    for hit in result["hits"]["hits"]:
        source = hit["_source"]
        held.setdefault(uuid.UUID(source["document_id"]), set()).add(source["classification"])
    return held


async def _no_squatter(real: OpenSearchBackend) -> None:
    indices = await _concrete_indices(real)
    assert real.alias not in indices, indices
    assert all(name.startswith(f"{real.alias}-") for name in indices), indices


async def test_opensearch_away_then_back_empty_under_traffic(
    opensearch_url: str, settings: Settings, database_url: str, services: Services
) -> None:
    tenant = await make_tenant(services)
    token = tenant.tokens[Role.ADMIN]
    word = f"osfault{uuid.uuid4().hex[:8]}"
    alias = f"prism-test-{uuid.uuid4().hex[:10]}"
    relay = FreezingRelay(opensearch_url)
    await relay.start()
    served_settings = opensearch_settings(settings, relay.url, alias=alias).model_copy(
        update={
            "request_timeout_seconds": DEADLINE,
            "opensearch_timeout_seconds": OPENSEARCH_TIMEOUT,
        }
    )
    # This test's view of the real node (behind no relay), for the damage and the checks.
    real = OpenSearchBackend(opensearch_url, alias=alias, replicas=0)
    phases: dict[str, tuple[float, float]] = {}
    try:
        with ServedApp(served_settings, with_worker=True) as served:
            async with httpx.AsyncClient(
                base_url=served.url, timeout=30, headers={"authorization": f"Bearer {token}"}
            ) as http:
                # Given documents uploaded, processed and indexed while all is well.
                seeds = []
                for n in range(3):
                    body = await _upload_one(http, f"The {word} seed clause {n} {uuid.uuid4()}.")
                    seeds.append(_uuid_of(body["data"]["uploadDocument"]["document"]["id"]))
                await _settle(services, tenant, 30)
                await real.refresh()
                assert await _searchable(http, word) == set(seeds)

                traffic = Traffic(served.url, token, word, seeds)
                clients = [
                    asyncio.create_task(traffic.searcher("searcher-1")),
                    asyncio.create_task(traffic.searcher("searcher-2")),
                    asyncio.create_task(traffic.uploader("uploader")),
                    asyncio.create_task(traffic.updater("updater")),
                    asyncio.create_task(traffic.reader("reader")),
                ]
                try:
                    began = time.monotonic()
                    await asyncio.sleep(3)
                    phases["up"] = (began, time.monotonic())
                    # When OpenSearch hangs ...
                    began = time.monotonic()
                    relay.freeze()
                    await asyncio.sleep(OPENSEARCH_TIMEOUT + 3)
                    relay.thaw()
                    phases["frozen"] = (began, time.monotonic())
                    await asyncio.sleep(1.5)
                    # ... then goes away ...
                    began = time.monotonic()
                    await relay.stop()
                    await asyncio.sleep(3)
                    # ... and restarts empty (this alias's indices and template are gone)
                    await _lose_everything(real)
                    await asyncio.sleep(2)
                    phases["down"] = (began, time.monotonic())
                    # the index jobs the outage met wait for a retry (their attempt given back)
                    waiting = {
                        j.id
                        for j in await _jobs(services, tenant)
                        if j.kind == INDEX and j.state is JobState.FAILED
                    }
                    await relay.start()
                    began = time.monotonic()
                    await asyncio.sleep(8)
                    phases["back"] = (began, time.monotonic())
                finally:
                    traffic.stop.set()
                    await asyncio.gather(*clients)
                assert served.process is not None
                assert served.process.poll() is None

                # Then every job ran in the end, none gave up, and the index jobs that met
                # the outage were retried (not DEAD, with attempts to spare).
                jobs = await _settle(services, tenant, 40)
                assert not [j for j in jobs if j.state is JobState.DEAD], [
                    (j.kind, j.last_error) for j in jobs if j.state is JobState.DEAD
                ]
                assert waiting, "no index job met the outage"
                retried = [j for j in jobs if j.id in waiting]
                assert all(j.state is JobState.SUCCEEDED for j in retried)
                assert all(j.attempts < j.max_attempts for j in retried)
                await _no_squatter(real)
                await real.refresh()

                # Nothing acknowledged is lost: every upload and the last acknowledged class of
                # every update is in PostgreSQL ...
                async with services.db.transaction(tenant.org_id) as session:
                    stored = {
                        row.id: row.classification
                        for row in await session.execute(
                            sa.select(Document.id, Document.classification).where(
                                Document.organization_id == tenant.org_id,
                                Document.deleted_at.is_(None),
                            )
                        )
                    }
                assert set(traffic.uploaded) <= set(stored), set(traffic.uploaded) - set(stored)
                for document_id, (classification, _) in traffic.classified.items():
                    assert stored[document_id] is classification, document_id
                # ... and what changed during the outage and after it is searchable, as it
                # now is, once its index jobs ran (before any reindex).
                # (A moment after the node went away: an answer is timed when this test's
                # loop gets to it, and the change's index job may have run before that.)
                outage_began = phases["down"][0] + 0.5
                changed_since = {d for d, at in traffic.uploaded.items() if at >= outage_began} | {
                    d for d, (_, at) in traffic.classified.items() if at >= outage_began
                }
                assert {d for d, at in traffic.uploaded.items() if at >= outage_began}
                assert {d for d, (_, at) in traffic.classified.items() if at >= outage_began}
                found = await _searchable(http, word)
                held = await _index_holds(real, tenant)
                assert changed_since <= found, {
                    d: (d in seeds, stored[d], held.get(d)) for d in changed_since - found
                }
                for document_id in changed_since:
                    assert held[document_id] == {stored[document_id].value}, document_id

                # When the operator reindexes (what the node lost with its indices) ...
                done = await asyncio.to_thread(_reindex, served_settings, database_url)
                assert done.returncode == 0, done.stderr
                # ... every acknowledged document is searchable, in its current state.
                everything = set(stored)
                assert set(traffic.uploaded) | set(seeds) <= everything
                assert await _searchable(http, word) == everything
                held = await _index_holds(real, tenant)
                assert {d: {c.value} for d, c in stored.items()} == held
                await _no_squatter(real)
            logs = served.logs
            # The same process served it all (it was never restarted).
            assert served.process is not None
            assert served.process.poll() is None
    finally:
        await relay.stop()
        await _lose_everything(real)
        await real.close()

    answers = traffic.answers
    # Every answer arrived within the deadline, and is data or a coded outage error with
    # Retry-After (a 503, as the database outage's are).
    problems = [a for a in answers if a.problem]
    assert not problems, problems[:5]
    late = [a for a in answers if a.elapsed > DEADLINE + SLACK]
    assert not late, [(a.operation, a.status, round(a.elapsed, 2)) for a in late[:5]]
    for answer in answers:
        if answer.ok:
            continue
        assert answer.status == 503, (answer.operation, answer.status, answer.body)
        assert set(answer.codes) <= OUTAGE_CODES, answer.body
        assert answer.retry_after is not None, answer.body
        assert answer.retry_after_extension == int(answer.retry_after), answer.body
        assert answer.body["data"] is None, answer.body

    def within(phase: str, answer: Answer) -> bool:
        began, ended = phases[phase]
        return began <= answer.ended and answer.started <= ended

    # Only search depends on OpenSearch: uploads, updates and reads never failed ...
    failed = {a.operation for a in answers if not a.ok}
    assert failed <= {"search"}, failed
    # ... and search felt the outage (a hung node within the client's timeout) ...
    frozen = [a for a in answers if within("frozen", a) and a.operation == "search"]
    assert sum(1 for a in frozen if a.status == 503) >= 2, [(a.status, a.elapsed) for a in frozen]
    assert all(a.elapsed <= OPENSEARCH_TIMEOUT + SLACK for a in frozen), frozen
    down = [a for a in answers if within("down", a) and a.operation == "search"]
    assert sum(1 for a in down if a.status == 503) >= 3, len(down)
    # ... and answered again without a restart.
    back = [a for a in answers if within("back", a) and a.operation == "search"]
    assert back
    assert all(a.ok for a in back[-4:]), [(a.status, a.codes) for a in back[-4:]]
    lines = logs.splitlines()
    assert "Traceback" not in logs, next(line for line in lines if "Traceback" in line)[-3000:]
    for phase in ("frozen", "down"):
        for name in ("upload", "update", "read"):
            assert any(within(phase, a) and a.ok for a in answers if a.operation == name), name
    first_ok = min(a.ended for a in back if a.ok)
    print(
        f"answers={len(answers)} search503={sum(1 for a in answers if a.status == 503)} "
        f"uploads={len(traffic.uploaded)} updates={len(traffic.classified)} "
        f"retried_index_jobs={len(retried)} "
        f"max_attempts_seen={max(j.attempts for j in retried)} "
        f"search_back_after={first_ok - phases['back'][0]:.2f}s "
        f"max_elapsed={max(a.elapsed for a in answers):.2f}s"
    )


async def _upload_one(http: httpx.AsyncClient, sentence: str) -> dict[str, Any]:
    operations = {"query": UPLOAD, "variables": {"input": {"file": None}}}
    response = await http.post(
        "/graphql",
        data={
            "operations": orjson.dumps(operations).decode(),
            "map": orjson.dumps({"0": ["variables.input.file"]}).decode(),
        },
        files={"0": ("seed.txt", f"NOTICE\n\n1. Clause\n{sentence}\n".encode(), "text/plain")},
        headers=CSRF,
    )
    body: dict[str, Any] = response.json()
    assert response.status_code == 200, body
    assert not body.get("errors"), body
    return body
