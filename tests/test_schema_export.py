"""The committed schema.graphql is the schema the code serves, and keeps the contract's names."""

from __future__ import annotations

from pathlib import Path

from graphql import build_schema as parse_sdl

from prism.schema import export_sdl

# The v1 surface of the public contract this release serves (later issues add the rest).
CONTRACT_V1 = {
    "Query": {
        "node",
        "nodes",
        "viewer",
        "documents",
        "document",
        "users",
        "apiTokens",
        "auditLog",
        "job",
        "verifyAuditChain",
        "executiveSummary",
        "dailySummary",
    },
    "Mutation": {
        "login",
        "refreshSession",
        "logout",
        "createApiToken",
        "revokeApiToken",
        "createUser",
        "updateUser",
        "updateDocument",
        "deleteDocument",
        "submitFeedback",
        "reviewFeedback",
        "uploadDocument",
        "analyzeDocument",
    },
    "Subscription": {"documentProgress"},
    "DocumentProgress": {"document", "processingStatus", "sectionsAnalyzed", "totalSections"},
    "UploadDocumentPayload": {"document", "deduplicated", "job"},
    "AnalyzeDocumentPayload": {"document", "job"},
    "AuditChainReport": {"checked", "valid", "firstBrokenId"},
    "Document": {
        "id",
        "filename",
        "mimeType",
        "fileSize",
        "sha256",
        "documentType",
        "classification",
        "languageCode",
        "wordCount",
        "pageCount",
        "processingStatus",
        "processingError",
        "uploadedBy",
        "createdAt",
        "updatedAt",
        "legalHold",
        "retentionExpiresAt",
        "storageTier",
        "totalSections",
        "totalFeedbackItems",
        "riskLevel",
        "confidence",
        "costUsd",
        "sections",
        "analyses",
        "feedback",
        "piiSummary",
    },
    "Section": {
        "id",
        "document",
        "order",
        "name",
        "content",
        "redacted",
        "wordCount",
        "analyses",
        "piiFindings",
    },
    "Analysis": {
        "id",
        "document",
        "section",
        "model",
        "modelVersion",
        "startedAt",
        "completedAt",
        "durationSeconds",
        "riskLevel",
        "confidence",
        "tokensUsed",
        "costUsd",
        "feedbackItems",
    },
    "Feedback": {
        "id",
        "document",
        "section",
        "analysis",
        "author",
        "itemId",
        "action",
        "category",
        "rating",
        "customText",
        "highlightedText",
        "workflowStatus",
        "approvedBy",
        "approvedAt",
        "createdAt",
    },
    "AuditEvent": {
        "id",
        "actor",
        "apiToken",
        "eventType",
        "category",
        "description",
        "resourceType",
        "resourceId",
        "before",
        "after",
        "ipAddress",
        "userAgent",
        "requestId",
        "createdAt",
        "hash",
        "prevHash",
    },
    "Viewer": {"organization", "user", "apiToken", "scopes"},
    "User": {
        "id",
        "email",
        "firstName",
        "lastName",
        "role",
        "department",
        "clearance",
        "mfaEnabled",
        "accessExpiresAt",
        "lastLoginAt",
        "createdAt",
    },
    "ApiToken": {
        "id",
        "name",
        "prefix",
        "scopes",
        "expiresAt",
        "lastUsedAt",
        "revokedAt",
        "createdAt",
    },
    "Job": {"id", "kind", "state", "attempts", "lastError", "createdAt", "startedAt", "finishedAt"},
    "ExecutiveSummary": {
        "periodDays",
        "totalDocumentsProcessed",
        "totalActiveUsers",
        "averageProcessingTimeSeconds",
        "totalAiFeedbackItems",
        "averageUserSatisfaction",
        "totalProcessingCostUsd",
        "highRiskDocumentsCount",
        "documentsPerDay",
        "costPerDocument",
        "highRiskPercentage",
        "userProductivityScore",
    },
    "DailySummary": {
        "date",
        "totalAnalyses",
        "avgProcessingTimeSeconds",
        "totalCostUsd",
        "avgConfidence",
        "totalFeedbackItems",
        "satisfiedUsersCount",
    },
}

# The governance fields of the contract served by this release (retention, legal hold, data
# quality; GDPR and encryption arrive with their own branches).
CONTRACT_GOVERNANCE = {
    "Query": {"retentionPolicies", "dataQualityReport"},
    "Mutation": {"updateRetentionPolicy"},
    "Document": {"legalHold", "retentionExpiresAt", "storageTier"},
    "RetentionPolicy": {
        "category",
        "hotDays",
        "warmDays",
        "coldDays",
        "archiveDays",
        "deleteAfterDays",
    },
    "QualityCheck": {"table", "dimension", "name", "score", "failingRows", "description"},
    "DataQualityReport": {"assessedAt", "overallScore", "checks"},
}


def test_committed_schema_is_fresh(repo_root: Path) -> None:
    committed = (repo_root / "schema.graphql").read_text()
    assert committed == export_sdl(), "schema.graphql is stale: run `make schema` and commit it"


def test_contract_names_are_served() -> None:
    schema = parse_sdl(export_sdl())
    for type_name, fields in (*CONTRACT_V1.items(), *CONTRACT_GOVERNANCE.items()):
        served = schema.get_type(type_name)
        assert served is not None, type_name
        missing = fields - set(served.fields)  # type: ignore[union-attr]
        assert not missing, (type_name, missing)
