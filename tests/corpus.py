"""Files for ingestion tests and benchmarks: good documents of every kind, and hostile ones."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import docx
from fpdf import FPDF
from pypdf import PdfReader, PdfWriter

CLAUSES = [
    ("1. Term", "This agreement shall automatically renew for successive one-year terms."),
    ("2. Liability", "The supplier accepts unlimited liability. Contact jane.doe@example.com."),
    ("3. Termination", "Either party may terminate at any time at its sole discretion."),
]


def docx_bytes(
    sections: list[tuple[str, str]] = CLAUSES, *, table: bool = True, pages: int = 1
) -> bytes:
    document = docx.Document()
    document.add_heading("Master Agreement", level=0)
    for _ in range(pages):
        for heading, body in sections:
            document.add_heading(heading, level=1)
            document.add_paragraph(body)
    if table:
        grid = document.add_table(rows=2, cols=2)
        grid.cell(0, 0).text, grid.cell(0, 1).text = "Party", "Role"
        grid.cell(1, 0).text, grid.cell(1, 1).text = "Northwind", "Supplier"
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def pdf_bytes(pages: list[str] | None = None, *, outline: bool = True) -> bytes:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for i, text in enumerate(pages or [body for _, body in CLAUSES]):
        pdf.add_page()
        if outline:
            pdf.start_section(f"Part {i + 1}")
        pdf.multi_cell(0, 6, text)
    return bytes(pdf.output())


def encrypted_pdf_bytes() -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes())))
    writer.encrypt(user_password="s3cret", owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def zip_bomb_docx_bytes(inflated_mib: int = 300) -> bytes:
    """A valid-looking .docx whose one extra part inflates to hundreds of MiB."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(docx_bytes())) as good,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as bomb,
    ):
        for item in good.infolist():
            bomb.writestr(item, good.read(item))
        with bomb.open("word/media/padding.bin", "w", force_zip64=True) as part:
            block = b"\0" * (1024 * 1024)
            for _ in range(inflated_mib):
                part.write(block)
    return out.getvalue()


def entity_docx_bytes() -> bytes:
    """Billion laughs in word/document.xml."""
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 9)
    ]
    laughs = (
        f'<?xml version="1.0"?><!DOCTYPE lolz [{"".join(entities)}]>'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        "<w:body><w:p><w:r><w:t>&lol8;</w:t></w:r></w:p></w:body></w:document>"
    )
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(docx_bytes())) as good, zipfile.ZipFile(out, "w") as evil:
        for item in good.infolist():
            data = laughs.encode() if item.filename == "word/document.xml" else good.read(item)
            evil.writestr(item, data)
    return out.getvalue()


def pdf_stream_bomb_bytes(inflated_mib: int = 1500) -> bytes:
    """A PDF whose page content stream inflates far beyond any memory limit."""
    import zlib

    compressor = zlib.compressobj(9)
    chunk = b" " * (1024 * 1024)
    stream = b"".join(compressor.compress(chunk) for _ in range(inflated_mib)) + compressor.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    body = io.BytesIO()
    body.write(b"%PDF-1.4\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(body.tell())
        body.write(b"%d 0 obj\n" % number + obj + b"\nendobj\n")
    xref = body.tell()
    body.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        body.write(b"%010d 00000 n \n" % offset)
    trailer = b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n"
    body.write(trailer % (len(objects) + 1, xref))
    return body.getvalue()


def write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def plain_zip_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("notes.txt", "not a word document")
    return out.getvalue()


def many_parts_zip_bytes(parts: int = 3000) -> bytes:
    """A 'docx' whose directory lists thousands of empty parts."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for i in range(parts):
            archive.writestr(f"word/media/e{i}", b"")
        archive.writestr("word/document.xml", b"<w:document/>")
    return out.getvalue()
