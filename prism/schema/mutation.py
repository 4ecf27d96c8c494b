"""The root Mutation, assembled from the domains' pieces: one ``input`` argument (or an ID) in,
a payload type out.

Strawberry collects a type's fields from its bases left to right (then its own), so the order
of the bases below is the order of the fields in ``schema.graphql``: identity (sign-in,
sessions, MFA, API tokens, users), documents, privacy, review and governance. Moving a base
moves its fields in the exported SDL.
"""

from __future__ import annotations

import strawberry

from prism.schema.documents import DocumentMutation
from prism.schema.governance import GovernanceMutation
from prism.schema.identity import IdentityMutation
from prism.schema.operations import OperationsMutation
from prism.schema.privacy import PrivacyMutation
from prism.schema.review import ReviewMutation
from prism.schema.webhooks import WebhookMutation


@strawberry.type
class Mutation(
    IdentityMutation,
    DocumentMutation,
    PrivacyMutation,
    ReviewMutation,
    GovernanceMutation,
    OperationsMutation,
    WebhookMutation,
):
    pass
