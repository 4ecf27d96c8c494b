"""Search with OpenSearch, through opensearch-py's async client.

Documents are sections (``_id`` = section id) in an index behind an alias: searches and writes
go through the alias, a full reindex builds ``<alias>-<timestamp>`` and swaps the alias in one
atomic ``_aliases`` call, so searches never see a half-built index. An index template gives
every such index explicit, strict mappings: keywords for what is filtered and counted, the
(PII-masked) text in the field of its language with that language's analyzer (``text``:
``english``, also for unknown; ``text_de``: ``german``; ``text_fr``: ``french``;
``text_simple``: ``standard`` for other languages). An index made before the language fields
gets them added in place (new fields only: its sections stay in ``text`` until ``prism search
reindex`` moves them to their language's field).

Writes never create an index by themselves (``require_alias`` on every write through the
alias): a node that lost its data (restarted empty) would otherwise get a plain, dynamically
mapped index squatting the alias's name. A write that finds the alias gone rebuilds the
template and the alias (empty; ``prism search reindex`` refills it) and is tried once more;
a search that finds it gone is SearchUnavailable; and a full reindex repairs any state."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from opensearchpy import AsyncOpenSearch
from opensearchpy.exceptions import ConnectionError as OpenSearchConnectionError
from opensearchpy.exceptions import NotFoundError, SerializationError, TransportError

from prism.errors import BadUserInput
from prism.search.backend import SearchUnavailable
from prism.search.query import TEXT_ANALYZERS, TEXT_FIELDS, opensearch_query, text_field
from prism.search.types import (
    FACET_FIELDS,
    HIGHLIGHT_FRAGMENTS,
    HIGHLIGHT_START,
    Hit,
    SearchPage,
    SearchRequest,
    SectionDocument,
    facets_in_order,
)
from prism.search.visibility import MandatoryFilter

T = TypeVar("T")
log = structlog.get_logger("prism.search")
TEMPLATE_VERSION = 2
KEYWORD = {"type": "keyword"}
MAPPINGS: dict[str, Any] = {
    # A field nobody declared is refused, not guessed: nothing unplanned reaches the index.
    "dynamic": "strict",
    "properties": {
        "organization_id": KEYWORD,
        "document_id": KEYWORD,
        "section_id": KEYWORD,
        "classification": KEYWORD,
        "department": KEYWORD,
        "document_type": KEYWORD,
        "risk_level": KEYWORD,
        "legal_hold": {"type": "boolean"},
        "deleted": {"type": "boolean"},
        "ord": {"type": "integer"},
        "language": KEYWORD,
        **{field: {"type": "text", "analyzer": a} for field, a in TEXT_ANALYZERS.items()},
        "document_created_at": {"type": "date"},
        "indexed_at": {"type": "date"},
    },
}
# GraphQL facet name -> index field.
FACET_SOURCE = {
    "classification": "classification",
    "documentType": "document_type",
    "riskLevel": "risk_level",
}
FRAGMENT_SIZE = 160
# The names Prism gives the indices behind an alias: ensure_index's first one and a reindex's
# ``<alias>-<%Y%m%d%H%M%S%f>``. Only these are ever cleaned up (the template's pattern could
# match other people's indices).
OWN_INDEX = r"-(?:initial|\d{20})"
REPAIR_HINT = "run `prism search reindex` to rebuild it"


class AliasMissing(Exception):
    """A write through the alias found no alias (and, with ``require_alias``, created
    nothing)."""


def _index_missing(exc: TransportError) -> bool:
    return exc.status_code == 404 and "index_not_found" in str(exc.error)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def source_of(doc: SectionDocument, indexed_at: str) -> dict[str, Any]:
    return {
        "organization_id": str(doc.organization_id),
        "document_id": str(doc.document_id),
        "section_id": str(doc.section_id),
        "classification": doc.classification.value,
        "department": doc.department,
        "document_type": doc.document_type.value,
        "risk_level": doc.risk_level.value if doc.risk_level else None,
        "legal_hold": doc.legal_hold,
        "deleted": False,
        "ord": doc.ord,
        "language": doc.language,
        text_field(doc.language): doc.text,
        "document_created_at": doc.document_created_at.isoformat(),
        "indexed_at": indexed_at,
    }


class OpenSearchBackend:
    name = "opensearch"

    def __init__(
        self,
        url: str,
        *,
        alias: str,
        shards: int = 1,
        replicas: int = 1,
        timeout_seconds: float = 10,
    ) -> None:
        self.alias = alias
        self.shards = shards
        self.replicas = replicas
        # One node URL or a load balancer's; credentials and https come from the URL. No
        # client-side retries: an index job retries through the queue, a search answers now.
        self.client = AsyncOpenSearch(
            hosts=[url], timeout=timeout_seconds, max_retries=0, retry_on_timeout=False
        )
        self._ready = False

    async def close(self) -> None:
        await self.client.close()

    # --- calls ----------------------------------------------------------------------------------

    async def _call(self, call: Awaitable[T]) -> T:
        """Whatever keeps OpenSearch from answering is SearchUnavailable: an outage
        (connection refused or lost, timeout, 5xx, 429), a refusal of our credentials
        (401, 403: a misconfiguration, logged as such), an answer that is not OpenSearch's
        (a body that is not JSON, e.g. a proxy's login page). An error OpenSearch itself
        reports about a request of ours (400, 404, 409) propagates."""
        try:
            return await call
        except OpenSearchConnectionError as exc:
            raise SearchUnavailable(f"OpenSearch is unreachable ({type(exc).__name__}).") from exc
        except SerializationError as exc:
            log.error(
                "OpenSearch's answer is not JSON: is PRISM_OPENSEARCH_URL a proxy or another "
                "service?",
                error=str(exc)[:200],
            )
            raise SearchUnavailable("OpenSearch's answer could not be read.") from exc
        except TransportError as exc:
            status = exc.status_code
            if status in (401, 403):
                log.error(
                    f"OpenSearch refused Prism's credentials ({status}): check the user, "
                    "password and permissions in PRISM_OPENSEARCH_URL",
                    status=status,
                )
                raise SearchUnavailable(f"OpenSearch refused access ({status}).") from exc
            if not isinstance(status, int) or status >= 500 or status == 429:
                raise SearchUnavailable(f"OpenSearch answered {status}.") from exc
            raise

    # --- indices and the alias -----------------------------------------------------------------

    def template(self) -> dict[str, Any]:
        return {
            "index_patterns": [f"{self.alias}-*"],
            "priority": 100,
            "version": TEMPLATE_VERSION,
            "_meta": {"owner": "prism", "about": "document sections, PII masked"},
            "template": {
                "settings": {
                    "number_of_shards": self.shards,
                    "number_of_replicas": self.replicas,
                },
                "mappings": MAPPINGS,
            },
        }

    async def ensure_index(self) -> None:
        """The template and, when the alias is missing (first use, or a node that lost its
        data), an empty index behind it. An index squatting the alias's name is not touched
        here: that is SearchUnavailable until ``prism search reindex`` replaces it."""
        if self._ready:
            return
        await self._put_template()
        if not await self._call(self.client.indices.exists_alias(name=self.alias)):
            if await self._call(self.client.indices.exists(index=self.alias)):
                log.error(
                    f"an index squats the search alias's name; {REPAIR_HINT}", alias=self.alias
                )
                raise SearchUnavailable("The OpenSearch index is damaged.")
            initial = f"{self.alias}-initial"
            try:
                await self._call(
                    self.client.indices.create(
                        index=initial,
                        body={"aliases": {self.alias: {"is_write_index": True}}},
                    )
                )
            except TransportError as exc:
                if "invalid_alias_name" in str(exc.error):
                    log.error(
                        f"an index squats the search alias's name; {REPAIR_HINT}", alias=self.alias
                    )
                    raise SearchUnavailable("The OpenSearch index is damaged.") from exc
                if "resource_already_exists" not in str(exc.error):
                    raise
                # Another process made it first (then the alias is there), or it was left
                # without the alias: put the alias (back) on it.
                if not await self.alias_in_place():
                    await self._call(
                        self.client.indices.update_aliases(
                            body={
                                "actions": [
                                    {
                                        "add": {
                                            "index": initial,
                                            "alias": self.alias,
                                            "is_write_index": True,
                                        }
                                    }
                                ]
                            }
                        )
                    )
            else:
                log.warning(
                    "search index created empty behind its alias; if documents were indexed "
                    "before (a node that lost its data), run `prism search reindex`",
                    alias=self.alias,
                    index=initial,
                )
        else:
            await self._add_fields()
        self._ready = True

    async def _put_template(self) -> None:
        await self._call(
            self.client.indices.put_index_template(
                name=f"{self.alias}-template", body=self.template()
            )
        )

    async def _add_fields(self) -> None:
        """Fields the template gained since the indices behind the alias were made (the
        language fields), added in place: adding a field is allowed, and the same mapping
        again changes nothing."""
        await self._call(
            self.client.indices.put_mapping(
                index=self.alias, body={"properties": MAPPINGS["properties"]}
            )
        )

    async def _through_alias(self, write: Callable[[], Awaitable[T]]) -> T:
        """A write through the alias. When the alias is gone (the node restarted empty),
        the template and alias are rebuilt and the write tried once more."""
        await self.ensure_index()
        try:
            return await write()
        except (AliasMissing, NotFoundError) as exc:
            if isinstance(exc, NotFoundError) and not _index_missing(exc):
                raise
            log.warning("search alias missing on write; rebuilding it", alias=self.alias)
            self._ready = False
            await self.ensure_index()
            try:
                return await write()
            except AliasMissing as again:
                raise SearchUnavailable("The OpenSearch index is missing.") from again

    async def indices_behind_alias(self) -> list[str]:
        try:
            found = await self._call(self.client.indices.get_alias(name=self.alias))
        except NotFoundError:
            return []
        return sorted(found)

    async def create_index(self) -> str:
        """A new, empty index for a reindex, tuned for bulk loading until finish_index."""
        await self._put_template()
        name = f"{self.alias}-{datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}"
        await self._call(
            self.client.indices.create(
                index=name,
                body={"settings": {"refresh_interval": "-1", "number_of_replicas": 0}},
            )
        )
        return name

    async def finish_index(self, name: str) -> None:
        await self._call(
            self.client.indices.put_settings(
                index=name,
                body={"index": {"refresh_interval": "1s", "number_of_replicas": self.replicas}},
            )
        )
        await self._call(self.client.indices.refresh(index=name))

    async def swap_alias(self, new_index: str) -> list[str]:
        """Point the alias at ``new_index`` alone, atomically; delete the indices it left and
        Prism's indices of this alias that nothing points at (an index squatting the alias's
        name goes in the same atomic call)."""
        old = [name for name in await self.indices_behind_alias() if name != new_index]
        actions: list[dict[str, Any]] = [
            {"remove": {"index": name, "alias": self.alias}} for name in old
        ]
        if not old and await self._call(self.client.indices.exists(index=self.alias)):
            log.warning("replacing an index that squats the search alias", alias=self.alias)
            actions.append({"remove_index": {"index": self.alias}})
            old.append(self.alias)
        actions.append({"add": {"index": new_index, "alias": self.alias, "is_write_index": True}})
        await self._call(self.client.indices.update_aliases(body={"actions": actions}))
        for name in old:
            await self._call(
                self.client.indices.delete(index=name, params={"ignore_unavailable": "true"})
            )
        orphans = await self._orphans(new_index)
        for name in orphans:
            await self._call(
                self.client.indices.delete(index=name, params={"ignore_unavailable": "true"})
            )
        self._ready = True
        return [*old, *orphans]

    async def _orphans(self, current: str) -> list[str]:
        """Prism's indices of this alias created before ``current`` that the alias does not
        point at: left by a reindex that stopped halfway, or by a lost alias. (Younger ones
        may be another reindex's, still loading.)"""
        found = await self._call(
            self.client.indices.get_settings(
                index=f"{self.alias}-*",
                name="index.creation_date",
                params={"ignore_unavailable": "true", "allow_no_indices": "true"},
            )
        )
        created = {
            name: int(value["settings"]["index"]["creation_date"])
            for name, value in found.items()
            if re.fullmatch(re.escape(self.alias) + OWN_INDEX, name)
        }
        if current not in created:
            return []
        behind = set(await self.indices_behind_alias())
        return sorted(
            name
            for name, at in created.items()
            if name != current and name not in behind and at <= created[current]
        )

    async def alias_in_place(self) -> bool:
        return bool(await self._call(self.client.indices.exists_alias(name=self.alias)))

    async def delete_stale(self, organization_id: uuid.UUID, before: datetime) -> int:
        """Remove an organization's sections not written since ``before`` (after an in-place
        reindex of that organization: what is left is gone from PostgreSQL)."""
        result = await self._through_alias(
            lambda: self._call(
                self.client.delete_by_query(
                    index=self.alias,
                    body={
                        "query": {
                            "bool": {
                                "filter": [
                                    {"term": {"organization_id": str(organization_id)}},
                                    {"range": {"indexed_at": {"lt": before.isoformat()}}},
                                ]
                            }
                        }
                    },
                    params={"refresh": "true", "conflicts": "proceed"},
                )
            )
        )
        return int(result.get("deleted", 0))

    # --- the protocol --------------------------------------------------------------------------

    async def index(
        self,
        organization_id: uuid.UUID,
        document_id: uuid.UUID,
        sections: Sequence[SectionDocument],
    ) -> None:
        # No refresh wait: the index refreshes every second by itself, and a job waiting for
        # it would hold its worker slot and the document's lock that long.
        if sections:
            await self._through_alias(lambda: self._bulk(sections, index=self.alias))
        # Sections of an earlier extraction (other ids) go.
        await self._delete_sections(
            organization_id, document_id, keep=[str(s.section_id) for s in sections]
        )

    async def delete(self, organization_id: uuid.UUID, document_id: uuid.UUID) -> None:
        await self._delete_sections(organization_id, document_id, keep=[])

    async def _delete_sections(
        self, organization_id: uuid.UUID, document_id: uuid.UUID, *, keep: list[str]
    ) -> None:
        """A document's sections, but for the ids in ``keep``, through the alias."""
        query: dict[str, Any] = {
            "filter": [
                {"term": {"organization_id": str(organization_id)}},
                {"term": {"document_id": str(document_id)}},
            ]
        }
        if keep:
            query["must_not"] = [{"ids": {"values": keep}}]
        await self._through_alias(
            lambda: self._call(
                self.client.delete_by_query(
                    index=self.alias,
                    body={"query": {"bool": query}},
                    params={"conflicts": "proceed"},
                )
            )
        )

    async def bulk(self, sections: Sequence[SectionDocument], index: str | None = None) -> int:
        if index is None:
            return await self._through_alias(lambda: self._bulk(sections, index=self.alias))
        return await self._bulk(sections, index=index)

    async def _bulk(self, sections: Sequence[SectionDocument], *, index: str) -> int:
        """Through the alias, ``require_alias``: a missing alias is AliasMissing, never a new
        index of that name."""
        if not sections:
            return 0
        indexed_at = _now()
        lines: list[dict[str, Any]] = []
        for doc in sections:
            action: dict[str, Any] = {"_index": index, "_id": str(doc.section_id)}
            if index == self.alias:
                action["require_alias"] = True
            lines.append({"index": action})
            lines.append(source_of(doc, indexed_at))
        result = await self._call(self.client.bulk(body=lines))
        if result.get("errors"):
            failures = [item["index"] for item in result["items"] if item["index"].get("error")]
            statuses = {int(f.get("status", 0)) for f in failures}
            if any(f["error"].get("type") == "index_not_found_exception" for f in failures):
                raise AliasMissing(index)
            if any(s == 429 or s >= 500 for s in statuses):
                raise SearchUnavailable(f"OpenSearch refused {len(failures)} sections for now.")
            reason = failures[0]["error"].get("reason", "unknown") if failures else "unknown"
            raise RuntimeError(f"OpenSearch refused {len(failures)} sections: {reason}")
        return len(sections)

    async def refresh(self) -> None:
        await self._call(self.client.indices.refresh(index=self.alias))

    async def search(self, visibility: MandatoryFilter, request: SearchRequest) -> SearchPage:
        if request.after is not None and request.after.backend != self.name:
            raise BadUserInput(
                "`after` was made by another search backend; search again without it.",
                argument="after",
            )
        await self.ensure_index()
        user = opensearch_query(request.query)
        body: dict[str, Any] = {
            "query": {
                "bool": {
                    # The mandatory filter first; the user's clauses can only narrow it.
                    "filter": [*visibility.opensearch(), *_user_filters(request)],
                    "must": user["must"],
                    "must_not": user["must_not"],
                }
            },
            "sort": [{"_score": {"order": "desc"}}, {"section_id": {"order": "asc"}}],
            "size": request.first + 1,
            "track_total_hits": True,
            "_source": ["document_id"],
            "highlight": {
                "encoder": "html",
                "pre_tags": ["<em>"],
                "post_tags": ["</em>"],
                "fields": {
                    field: {
                        "fragment_size": FRAGMENT_SIZE,
                        "number_of_fragments": HIGHLIGHT_FRAGMENTS,
                    }
                    for field in TEXT_FIELDS
                },
            },
            "aggs": {
                name: {"terms": {"field": FACET_SOURCE[name], "size": 10}} for name in FACET_FIELDS
            },
        }
        if request.after is not None:
            body["search_after"] = [request.after.score, str(request.after.section_id)]
        try:
            result = await self._call(self.client.search(index=self.alias, body=body))
        except NotFoundError as exc:
            # The node lost the index (restarted empty): the next call rebuilds the alias.
            self._ready = False
            log.warning("search alias missing", alias=self.alias)
            raise SearchUnavailable("The OpenSearch index is missing.") from exc
        except TransportError as exc:
            # A query we built refused: a bug of ours, unless the alias's name now holds
            # something else (then ensure_index says SearchUnavailable).
            self._ready = False
            await self.ensure_index()
            raise exc
        try:
            return self._page(result, request)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            # JSON, but not a search result (something else answers at OpenSearch's address).
            log.error(
                "OpenSearch's answer is not a search result: is PRISM_OPENSEARCH_URL a proxy "
                "or another service?",
                error=f"{type(exc).__name__}: {str(exc)[:200]}",
            )
            raise SearchUnavailable("OpenSearch's answer could not be read.") from exc

    def _page(self, result: Any, request: SearchRequest) -> SearchPage:
        found = result["hits"]["hits"]
        hits = []
        for raw in found[: request.first]:
            score = float(raw["sort"][0])
            section_id = uuid.UUID(raw["_id"])
            # A section's text is in one language's field: its fragments are there.
            highlight = raw.get("highlight", {})
            fragments = [f for field in TEXT_FIELDS for f in highlight.get(field, [])]
            hits.append(
                Hit(
                    section_id=section_id,
                    document_id=uuid.UUID(raw["_source"]["document_id"]),
                    score=score,
                    highlights=[f for f in fragments if HIGHLIGHT_START in f],
                    cursor=request.encode(self.name, score, section_id),
                )
            )
        aggregations = result.get("aggregations", {})
        counts = {
            name: {
                str(b["key"]): int(b["doc_count"])
                for b in aggregations.get(name, {}).get("buckets", [])
            }
            for name in FACET_FIELDS
        }
        return SearchPage(
            hits=hits,
            has_next_page=len(found) > request.first,
            has_previous_page=request.after is not None,
            total_count=int(result["hits"]["total"]["value"]),
            facets=facets_in_order(counts),
            backend=self.name,
        )


def _user_filters(request: SearchRequest) -> list[dict[str, Any]]:
    f = request.filters
    clauses: list[dict[str, Any]] = []
    if f.classification:
        clauses.append({"terms": {"classification": [c.value for c in f.classification]}})
    if f.document_type:
        clauses.append({"terms": {"document_type": [t.value for t in f.document_type]}})
    if f.risk_level:
        clauses.append({"terms": {"risk_level": [r.value for r in f.risk_level]}})
    if f.document_id is not None:
        clauses.append({"term": {"document_id": str(f.document_id)}})
    return clauses
