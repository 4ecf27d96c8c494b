"""Scans and photos of pages read by Tesseract: uploaded over HTTP, processed by the worker,
searchable like any text; hostile images refused with a code, never crashing a worker."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from prism.extraction.detect import Kind
from prism.extraction.extract import ExtractionError, Limits, extract_isolated
from prism.extraction.ocr import OcrLimits
from prism.extraction.pages import PageLimits
from prism.models.enums import Role
from prism.services import Services
from tests.factories import Tenant, codes, gql
from tests.pipeline_helpers import run_jobs, upload
from tests.scans import encoded, many_page_tiff, page_image, png_bomb, require_tesseract
from tests.search_helpers import SEARCH

SECTIONS = """query($id: ID!) { document(id: $id) {
  processingStatus processingError mimeType pageCount totalFeedbackItems riskLevel
  sections(first: 20) { edges { node { name content textFromOcr ocrConfidence } } }
} }"""


async def _processed(
    client: httpx.AsyncClient, services: Services, token: str, name: str, data: bytes
) -> dict[str, Any]:
    response = await upload(client, token, name, data, documentType="CONTRACT")
    body = response.json()
    assert body.get("errors") is None, body
    document_id = body["data"]["uploadDocument"]["document"]["id"]
    await run_jobs(services)
    found = await gql(client, SECTIONS, {"id": document_id}, token=token)
    document: dict[str, Any] = found["data"]["document"]
    document["id"] = document_id
    return document


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("PDF", "application/pdf")],
)
async def test_a_scan_becomes_searchable_sections_marked_as_ocr(
    client: httpx.AsyncClient, services: Services, tenant: Tenant, fmt: str, mime: str
) -> None:
    require_tesseract()
    # given a page of known text, photographed (PNG, JPEG) or scanned into a PDF without a
    # text layer; a marker word makes it findable among other tests' documents
    # (of letters OCR does not confuse with digits or each other: no o/0, l/1, s/5, z/2)
    marker = "Reference " + "".join(random.choice("acdefhkmnprtuvwxy") for _ in range(8))
    data = encoded(page_image(marker=marker), fmt)
    token = tenant.tokens[Role.REVIEWER]
    # when it is uploaded and the worker processes it
    document = await _processed(client, services, token, f"scan.{fmt.lower()}", data)
    # then its text was read by Tesseract into sections marked as OCR, with a confidence
    assert document["processingStatus"] == "COMPLETED", document
    assert document["mimeType"] == mime
    assert document["pageCount"] == 1
    sections = [e["node"] for e in document["sections"]["edges"]]
    text = "\n".join(f"{s['name']}\n{s['content']}" for s in sections)
    assert "renews automatically" in text
    assert "unlimited liability" in text
    assert marker.split()[1] in text
    assert all(s["textFromOcr"] for s in sections)
    assert all(0.5 < s["ocrConfidence"] <= 1 for s in sections)
    # the analysis reads it as any text: the unlimited liability is flagged
    assert document["totalFeedbackItems"] > 0
    # and search finds it by its words
    found = await gql(client, SEARCH, {"q": marker.split()[1], "first": 5}, token=token)
    hits = found["data"]["search"]["edges"]
    assert [h["node"]["document"]["id"] for h in hits] == [document["id"]]


async def test_a_text_pdf_is_not_read_by_ocr(
    client: httpx.AsyncClient, services: Services, tenant: Tenant
) -> None:
    from tests import corpus

    document = await _processed(
        client, services, tenant.tokens[Role.REVIEWER], "text.pdf", corpus.pdf_bytes()
    )
    sections = [e["node"] for e in document["sections"]["edges"]]
    assert sections
    assert not any(s["textFromOcr"] for s in sections)
    assert all(s["ocrConfidence"] is None for s in sections)


async def test_a_decompression_bomb_is_refused_at_upload(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    # given a 20000×20000 PNG (400 MB decoded) of a few hundred kilobytes
    bomb = png_bomb()
    assert len(bomb) < 1024 * 1024
    # when it is uploaded, then it is refused from its header, with a code, before decoding
    response = await upload(client, tenant.tokens[Role.REVIEWER], "photo.png", bomb)
    body = response.json()
    assert codes(body) == ["UNSUPPORTED_MEDIA_TYPE"], body
    assert "20000×20000 pixels" in body["errors"][0]["message"]


async def test_a_tiff_of_too_many_pages_is_refused_at_upload(
    client: httpx.AsyncClient, tenant: Tenant, services: Services
) -> None:
    pages = services.settings.ocr_max_pages + 1
    response = await upload(client, tenant.tokens[Role.REVIEWER], "fax.tiff", many_page_tiff(pages))
    body = response.json()
    assert codes(body) == ["UNSUPPORTED_MEDIA_TYPE"], body
    assert "pages" in body["errors"][0]["message"]


async def test_a_bomb_that_reaches_the_worker_fails_its_child_not_the_worker(
    tmp_path: Path,
) -> None:
    # given a bomb already stored (stored before the limit was lowered, say)
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(8_000, 8_000))
    limits = Limits(timeout_seconds=30, pages=PageLimits(max_pixels=10_000_000))
    # when it is extracted, then the child refuses it plainly, and the worker lives on
    with pytest.raises(ExtractionError, match="8000×8000 pixels"):
        await extract_isolated(path, Kind.PNG, limits)
    # and a damaged image is a plain refusal too
    path.write_bytes(png_bomb(100, 100)[:60])
    with pytest.raises(ExtractionError, match="damaged"):
        await extract_isolated(path, Kind.PNG, limits)


def _tesseracts() -> set[int]:
    """The tesseract processes running on this machine (not zombies: a killed one stays
    listed until its new parent, PID 1, reaps it, which a container's may never do), other
    than Pytesseract's `tesseract --version`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() != "tesseract":
                    continue
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if state != "Z" and b"--version" not in command:
                found.add(int(entry.name))
    return found


async def test_tesseract_dies_with_an_extraction_that_is_stopped(tmp_path: Path) -> None:
    require_tesseract()
    # given a large scan being read (a worker shutting down stops its extraction)
    lines = tuple(f"Clause {i}: the supplier shall deliver the goods on time." for i in range(40))
    big = page_image(lines).resize((3300, 4600))
    path = tmp_path / "big.png"
    big.save(path)
    before = _tesseracts()
    task = asyncio.create_task(extract_isolated(path, Kind.PNG, Limits()))
    deadline = time.monotonic() + 20
    while not (_tesseracts() - before) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert _tesseracts() - before, "tesseract never started"
    # when the extraction is cancelled
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # then no tesseract of it is left running
    await asyncio.sleep(0.2)
    assert not (_tesseracts() - before)


async def test_ocr_has_a_time_limit(tmp_path: Path) -> None:
    require_tesseract()
    path = tmp_path / "page.png"
    page_image().save(path)
    limits = Limits(ocr=OcrLimits(timeout_seconds=0.01))
    with pytest.raises(ExtractionError, match="OCR took longer than"):
        await extract_isolated(path, Kind.PNG, limits)


async def test_a_scanned_page_declared_huge_renders_within_the_pixel_bound(
    tmp_path: Path,
) -> None:
    require_tesseract()
    # given an image-only PDF whose page claims to be 40 metres wide (1 dpi)
    path = tmp_path / "huge.pdf"
    page_image().convert("RGB").save(path, format="PDF", resolution=1)
    limits = Limits(pages=PageLimits(max_pixels=4_000_000))
    # when it is extracted, then its page is rendered within the bound and still read
    extracted = await extract_isolated(path, Kind.PDF, limits)
    text = "\n".join(s.content for s in extracted.sections)
    assert "unlimited liability" in text
    assert extracted.ocr_of(0)[0]
