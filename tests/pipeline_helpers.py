"""Uploading over the GraphQL multipart request spec, and running queued jobs."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from prism.jobs.worker import Worker
from prism.services import Services

CSRF = {"apollo-require-preflight": "true"}
UPLOAD = """mutation($input: UploadDocumentInput!) {
  uploadDocument(input: $input) {
    deduplicated
    document { id filename mimeType fileSize sha256 processingStatus classification }
    job { id kind state }
  }
}"""
DOCUMENT = """query($id: ID!) { document(id: $id) {
  processingStatus processingError totalSections totalFeedbackItems riskLevel confidence costUsd
  wordCount pageCount
  sections(first: 100) { edges { node { name content redacted
    analyses { model riskLevel feedbackItems { category } } } } }
} }"""


async def upload(
    client: httpx.AsyncClient,
    token: str,
    filename: str,
    data: bytes,
    *,
    content_type: str = "application/octet-stream",
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> httpx.Response:
    operations = {"query": UPLOAD, "variables": {"input": {"file": None, **fields}}}
    return await client.post(
        "/graphql",
        data={
            "operations": orjson.dumps(operations).decode(),
            "map": orjson.dumps({"0": ["variables.input.file"]}).decode(),
        },
        files={"0": (filename, data, content_type)},
        headers={"authorization": f"Bearer {token}", **(CSRF if headers is None else headers)},
    )


async def run_jobs(services: Services) -> int:
    """Run every queued job to the end, as a worker process would."""
    return await Worker(services, concurrency=2).drain()
