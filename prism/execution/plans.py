"""Plans of registered read operations, independent of variable values, and their cache.

A ``Plan`` is an operation planned (``prism.execution.planner``) for one visibility class
(``prism.execution.limits.visibility_key``: organization, role, clearance, department, token
scopes). Each request only binds its values: ``Plan.bind(variables, principal)`` gives the
``Compiled`` statement (SQL text + bind values), so one plan serves every variable value and
every principal of the class. ``PlanCache`` keeps plans, or the reason an operation is not
planned, in a bounded LRU keyed by (sha256 of the document text, operation name, visibility
key).

What the statement takes as a bind (one statement for every value):

- page sizes (``first``: ``LIMIT $n``) and a cursor's key parts (``after``);
- every condition of a ``DocumentFilter`` (``(col = ANY($n) OR $n IS NULL)``, the same for
  ``uploadedBy`` and ``legalHold``);
- IDs (``document(id:)``, ``node(id:)``): the row id;
- the caller's organization, user, department and visible classifications.

What is the statement's *shape*, so a plan keeps one statement per shape (a bounded handful,
``Plan.SHAPES``), keyed by the shape, never by the value:

- whether ``after`` is given (a cursor adds a keyset condition and ``hasPreviousPage``);
- ``orderBy`` of ``documents`` (the field and direction: the ORDER BY and the cursor's keys,
  eight shapes at most);
- the type an ID names for ``node``/``document`` (which table is read), or that it is not an ID.

Values the interpreted path refuses (a bad cursor, ``first`` over 100, a bad ID or filter,
date filters) make ``bind`` raise ``NotPlanned``: the request goes to the interpreted path,
which reports the error with its path, as before. The actions a plan needs are decided again
for each request's principal (access expiry and API-token rules are not in the visibility key).

API for the request path::

    cache = PlanCache()                      # one per process
    entry = cache.get(source, document, operation_name, principal)
    if isinstance(entry, str):               # not planned: the reason
        ...interpreted path...
    try:
        compiled = entry.bind(variables, principal)
    except NotPlanned as reason:
        ...interpreted path...
    text = await session.scalar(compiled.sql, compiled.values)  # then compiled.must_exist
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from graphql import DocumentNode, OperationDefinitionNode

from prism.authz.principal import Principal
from prism.execution.cost import operation_of
from prism.execution.fragments import NotPlanned, with_defaults
from prism.execution.limits import visibility_key
from prism.execution.planner import Compiled, Request, Statement, statement

__all__ = ["Compiled", "NotPlanned", "Plan", "PlanCache", "document_hash", "make_plan"]


class Plan:
    """An operation planned for one visibility class: one statement per shape of its
    variables (most operations have exactly one), made when a request first has that shape."""

    SHAPES = 16

    def __init__(
        self,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        principal: Principal,
        first: Statement,
    ) -> None:
        self.document = document
        self.operation = operation
        self.principal = principal  # the class's first principal: plans the other shapes
        self.statements: list[Statement] = [first]

    def bind(self, variables: Mapping[str, Any] | None, principal: Principal) -> Compiled:
        """The statement for ``variables`` with their values and ``principal``'s bound.
        ``principal`` must have the visibility key the plan was got for. NotPlanned when this
        shape is not planned or a value is one the interpreted path refuses."""
        request = Request(with_defaults(self.operation, variables or {}), principal)
        for index, candidate in enumerate(self.statements):
            if candidate.fits(request):
                if index:
                    self.statements.insert(0, self.statements.pop(index))
                return candidate.bind(request)
        made = statement(self.document, self.operation, self.principal, request.variables)
        self.statements.insert(0, made)
        del self.statements[self.SHAPES :]
        return made.bind(request)

    @property
    def reason(self) -> str | None:
        """Why the operation is not planned for the first shape seen, or why some of its
        root fields are not (None: it is, whole)."""
        return self.statements[0].reason


def document_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


class PlanCache:
    """Plans by (sha256 of the document text, operation name, visibility key), least
    recently used first out. An entry is a ``Plan`` or the reason the operation is not
    planned at all (not a query, a field the planner does not know, a refused action)."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[str, str, str], Plan | str] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def get(
        self,
        source: str,
        document: DocumentNode,
        operation_name: str | None,
        principal: Principal,
        *,
        variables: Mapping[str, Any] | None = None,
        digest: str | None = None,
    ) -> Plan | str:
        """The plan of ``document`` (parsed from ``source``; ``digest``, its sha256, when
        known) for ``principal``'s visibility class, made on a miss with ``variables`` (the
        first request's: they decide only the first statement's shape)."""
        key = (digest or document_hash(source), operation_name or "", visibility_key(principal))
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            return entry
        entry = make_plan(document, operation_name, principal, variables)
        self.entries[key] = entry
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return entry


def make_plan(
    document: DocumentNode,
    operation_name: str | None,
    principal: Principal,
    variables: Mapping[str, Any] | None = None,
) -> Plan | str:
    """A plan of the operation, or the reason there is none whatever the variables."""
    operation = operation_of(document, operation_name)
    if operation is None:
        return "no single operation"
    first = statement(document, operation, principal, with_defaults(operation, variables or {}))
    if first.sql is None and first.reason is not None and not first.shapes:
        return first.reason  # no variable could change it
    return Plan(document, operation, principal, first)
