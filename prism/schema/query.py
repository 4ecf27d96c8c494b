"""The root Query, assembled from the domains' pieces.

Strawberry collects a type's fields from its bases left to right (then its own), so the order
of the bases below is the order of the fields in ``schema.graphql``: BI first, then the entry
fields, documents, identity, audit, access, search, jobs, privacy and governance. Moving a
base moves its fields in the exported SDL.
"""

from __future__ import annotations

import strawberry

from prism.schema.access import AccessQuery
from prism.schema.audit import (
    AuditQuery,
    JobQuery,
)
from prism.schema.bi import BiQuery
from prism.schema.documents import DocumentQuery
from prism.schema.governance import GovernanceQuery
from prism.schema.identity import IdentityQuery
from prism.schema.nodes import NodeQuery
from prism.schema.operations import OperationsQuery
from prism.schema.privacy import PrivacyQuery
from prism.schema.search import SearchQuery
from prism.schema.webhooks import WebhookQuery


@strawberry.type
class Query(
    BiQuery,
    NodeQuery,
    DocumentQuery,
    IdentityQuery,
    AuditQuery,
    AccessQuery,
    SearchQuery,
    JobQuery,
    PrivacyQuery,
    GovernanceQuery,
    OperationsQuery,
    WebhookQuery,
):
    pass
