"""The query language both backends accept, PostgreSQL's ``websearch_to_tsquery``: words are
ANDed, ``"a phrase"`` matches words in order, ``OR`` between two terms matches either, and
``-word`` excludes. PostgreSQL parses it itself; this module gives OpenSearch the same
meaning, built from match queries only (no query-string syntax, so no syntax errors and
nothing a client can use to reach outside the mandatory filter).

A section's text is in the field of its language (``text`` for English and unknown, analysed
with OpenSearch's ``english`` analyzer; ``text_de`` with ``german``, ``text_fr`` with
``french``; ``text_simple`` for other languages), so every clause asks all of them: each
field analyses the query in its own language, as PostgreSQL parses it per configuration."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

TEXT_FIELD = "text"
# Field of each language's text, and its analyzer.
LANGUAGE_FIELDS = {"de": "text_de", "fr": "text_fr"}
OTHER_LANGUAGE_FIELD = "text_simple"
TEXT_ANALYZERS = {
    TEXT_FIELD: "english",
    "text_de": "german",
    "text_fr": "french",
    OTHER_LANGUAGE_FIELD: "standard",
}
TEXT_FIELDS = tuple(TEXT_ANALYZERS)


def text_field(language: str | None) -> str:
    """The field a section's text goes in: English and unknown in ``text``, German and
    French in their own, other languages in ``text_simple``."""
    if language is None or language == "en":
        return TEXT_FIELD
    return LANGUAGE_FIELDS.get(language, OTHER_LANGUAGE_FIELD)


_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')


@dataclass(frozen=True)
class Term:
    text: str
    phrase: bool
    negated: bool


def parse(query: str) -> list[list[Term]]:
    """AND of OR-groups of terms, as websearch_to_tsquery reads them."""
    groups: list[list[Term]] = []
    join_next = False
    for match in _TOKEN.finditer(query):
        sign, quoted, bare = match.groups()
        if bare is not None:
            if bare.upper() == "OR":
                join_next = bool(groups)
                continue
            negated = bare.startswith("-") and len(bare) > 1
            term = Term(text=bare[1:] if negated else bare, phrase=False, negated=negated)
        else:
            if not quoted.strip():
                continue
            term = Term(text=quoted, phrase=True, negated=sign == "-")
        if join_next and groups:
            groups[-1].append(term)
        else:
            groups.append([term])
        join_next = False
    return groups


def _match(term: Term) -> dict[str, Any]:
    """The term in any language's field, each analysing it in its language (all words in
    one field: ``best_fields`` applies ``and`` per field)."""
    if term.phrase:
        return {"multi_match": {"query": term.text, "type": "phrase", "fields": [*TEXT_FIELDS]}}
    return {
        "multi_match": {
            "query": term.text,
            "type": "best_fields",
            "operator": "and",
            "fields": [*TEXT_FIELDS],
        }
    }


def _clause(term: Term) -> dict[str, Any]:
    return {"bool": {"must_not": [_match(term)]}} if term.negated else _match(term)


def opensearch_query(query: str) -> dict[str, list[dict[str, Any]]]:
    """``must`` and ``must_not`` clauses of the user's query (the caller adds the filter).

    Plain words go into one ``match`` with operator AND, so a stop word ("the") is dropped by
    the analyzer as PostgreSQL drops it, instead of matching nothing on its own."""
    must: list[dict[str, Any]] = []
    must_not: list[dict[str, Any]] = []
    words: list[str] = []
    for group in parse(query):
        if len(group) > 1:
            must.append(
                {"bool": {"should": [_clause(t) for t in group], "minimum_should_match": 1}}
            )
            continue
        (term,) = group
        if term.negated:
            must_not.append(_match(term))
        elif term.phrase:
            must.append(_match(term))
        else:
            words.append(term.text)
    if words:
        must.insert(0, _match(Term(text=" ".join(words), phrase=False, negated=False)))
    return {"must": must, "must_not": must_not}
