"""Text extraction into sections, bounded against hostile files.

Every extraction runs in a child process (forked from a preloaded forkserver) with an
address-space limit and a wall-clock timeout: a zip bomb, a PDF stream bomb or a parser loop
kills a child, never the worker. Inside, each format is also checked before it is parsed:
actual inflated bytes and entry counts of OOXML archives, no DTDs or entity declarations in
their XML, no password-protected PDFs, a page cap."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import re
import resource
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
from charset_normalizer import from_bytes

from prism.extraction.detect import Kind
from prism.extraction.pii import scan
from prism.extraction.text import TextSection, count_words, split_sections

MAX_ZIP_ENTRIES = 2_000
MAX_SECTIONS = 5_000
MAX_TEXT_CHARS = 20_000_000
MAX_INFLATED_BYTES = 256 * 1024 * 1024
_XML_DECLARATIONS = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)


class ExtractionError(Exception):
    """The file cannot be extracted; the message is for the document's processingError."""


@dataclass(frozen=True)
class Limits:
    timeout_seconds: float = 60
    memory_mb: int = 768
    max_pages: int = 2000


@dataclass
class Extracted:
    sections: list[TextSection]
    page_count: int | None = None
    word_count: int = 0
    # PII findings per section, computed in the child too (under its time limit).
    findings: list[list[dict[str, Any]]] | None = None
    # The document's language and each section's (ISO 639-1), detected in the child too.
    language: str | None = None
    languages: list[str | None] | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "sections": [[s.name, s.content] for s in self.sections],
                "page_count": self.page_count,
                "word_count": self.word_count,
                "findings": self.findings,
                "language": self.language,
                "languages": self.languages,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Extracted:
        raw = orjson.loads(data)
        return cls(
            sections=[TextSection(name=str(n), content=str(c)) for n, c in raw["sections"]],
            page_count=raw["page_count"],
            word_count=int(raw["word_count"]),
            findings=raw["findings"],
            language=_language_code(raw.get("language")),
            languages=[_language_code(code) for code in raw["languages"]]
            if isinstance(raw.get("languages"), list)
            and len(raw["languages"]) == len(raw["sections"])
            else None,
        )


def _language_code(value: object) -> str | None:
    """A language code from the (untrusted) child: two lower-case letters, or nothing."""
    if isinstance(value, str) and len(value) == 2 and value.isascii() and value.islower():
        return value
    return None


def _bounded(extracted: Extracted) -> Extracted:
    """What PostgreSQL can store and the pipeline can afford: no NUL (nor other control
    characters but line breaks and tabs), at most MAX_SECTIONS sections of MAX_TEXT_CHARS."""
    if len(extracted.sections) > MAX_SECTIONS:
        raise ExtractionError(f"The document splits into more than {MAX_SECTIONS} sections.")
    if sum(len(s.content) for s in extracted.sections) > MAX_TEXT_CHARS:
        raise ExtractionError(f"The document holds more than {MAX_TEXT_CHARS} characters of text.")
    extracted.sections = [
        TextSection(
            name=_CONTROL.sub("", s.name)[:500] or "Untitled", content=_CONTROL.sub("", s.content)
        )
        for s in extracted.sections
    ]
    extracted.findings = [[f.as_json() for f in scan(s.content)] for s in extracted.sections]
    from prism.extraction.language import detect_sections  # built in the fork server

    extracted.language, extracted.languages = detect_sections(
        [s.content for s in extracted.sections]
    )
    return extracted


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


# --- formats ---------------------------------------------------------------------------------


def extract_txt(path: Path) -> Extracted:
    data = path.read_bytes()
    best = from_bytes(data).best()
    if best is None:
        raise ExtractionError("The text's encoding could not be recognised.")
    text = str(best).replace("\r\n", "\n").replace("\r", "\n")
    sections = split_sections(text)
    return Extracted(sections=sections, word_count=count_words(text))


def check_ooxml(path: Path) -> None:
    """Refuse archive bombs by what actually inflates, and XML with DTDs or entities."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ExtractionError("The document is a damaged zip archive.") from exc
    with archive:
        entries = archive.infolist()
        if len(entries) > MAX_ZIP_ENTRIES:
            raise ExtractionError(f"The document has more than {MAX_ZIP_ENTRIES} parts.")
        inflated = 0
        for entry in entries:
            if entry.flag_bits & 0x1:
                raise ExtractionError("The document is encrypted or password-protected.")
            tail = b""
            with archive.open(entry) as part:
                while chunk := part.read(1024 * 1024):
                    inflated += len(chunk)
                    if inflated > MAX_INFLATED_BYTES:
                        raise ExtractionError(
                            "The document inflates beyond "
                            f"{MAX_INFLATED_BYTES // (1024 * 1024)} MiB (a zip bomb?)."
                        )
                    if entry.filename.endswith((".xml", ".rels")) and _XML_DECLARATIONS.search(
                        tail + chunk
                    ):
                        raise ExtractionError(
                            "The document's XML declares a DTD or entities, which Word never "
                            "writes; it is refused."
                        )
                    tail = chunk[-16:]


def extract_docx(path: Path) -> Extracted:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    check_ooxml(path)
    try:
        document = docx.Document(str(path))
    except Exception as exc:
        raise ExtractionError("The Word document could not be read: it is damaged.") from exc
    sections: list[TextSection] = []
    name, body = "Document", list[str]()

    def flush() -> None:
        text = "\n".join(body).strip()
        if text:
            sections.append(TextSection(name=name[:500], content=text))

    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            style = (block.style.name if block.style is not None else "") or ""
            text = block.text.strip()
            if text and (style.startswith("Heading") or style == "Title"):
                flush()
                name, body = text, []
            elif text:
                body.append(text)
        elif isinstance(block, Table):
            for row in block.rows:
                cells = [c.text.strip() for c in row.cells]
                body.append(" | ".join(c for c in cells if c))
    flush()
    if not sections:
        raise ExtractionError("The Word document contains no text.")
    words = sum(count_words(s.content) for s in sections)
    return Extracted(sections=sections, page_count=_docx_pages(path), word_count=words)


def _docx_pages(path: Path) -> int | None:
    """Word stores its page count in docProps/app.xml (absent when another tool wrote it)."""
    from defusedxml import ElementTree

    with zipfile.ZipFile(path) as archive:
        if "docProps/app.xml" not in archive.namelist():
            return None
        root = ElementTree.fromstring(archive.read("docProps/app.xml"))
    for element in root.iter():
        if element.tag.endswith("}Pages") and (element.text or "").strip().isdigit():
            return int(element.text or "0")
    return None


def extract_pdf(path: Path, max_pages: int) -> Extracted:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise ExtractionError("The PDF is password-protected.")
        pages = len(reader.pages)
    except ExtractionError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise ExtractionError("The PDF could not be read: it is damaged.") from exc
    if pages > max_pages:
        raise ExtractionError(f"The PDF has {pages} pages; at most {max_pages} are accepted.")
    texts = [(page.extract_text() or "").strip() for page in reader.pages]
    sections = _pdf_outline_sections(reader, texts) or [
        TextSection(name=f"Page {i + 1}", content=text) for i, text in enumerate(texts) if text
    ]
    if not sections:
        raise ExtractionError("The PDF contains no extractable text (a scan?).")
    return Extracted(
        sections=sections, page_count=pages, word_count=sum(count_words(t) for t in texts)
    )


def _pdf_outline_sections(reader: Any, texts: list[str]) -> list[TextSection]:
    """Top-level bookmarks, each spanning the pages up to the next one."""
    try:
        marks = [
            (item.title, reader.get_destination_page_number(item))
            for item in reader.outline
            if not isinstance(item, list)
        ]
    except Exception:  # noqa: BLE001 - a broken outline just means page sections
        return []
    marks = sorted((page, title) for title, page in marks if page is not None and page >= 0)
    sections = []
    for i, (start, title) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else len(texts)
        content = "\n".join(texts[start : max(end, start + 1)]).strip()
        if content:
            sections.append(TextSection(name=str(title)[:500], content=content))
    return sections


def extract_file(path: Path, kind: Kind, limits: Limits) -> Extracted:
    if kind is Kind.TXT:
        return extract_txt(path)
    if kind is Kind.DOCX:
        return extract_docx(path)
    return extract_pdf(path, limits.max_pages)


# --- isolation -------------------------------------------------------------------------------


def _child(conn: Connection, path: str, kind: str, limits: Limits) -> None:
    limit = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        conn.send_bytes(b"ok" + _bounded(extract_file(Path(path), Kind(kind), limits)).to_json())
    except ExtractionError as exc:
        conn.send_bytes(b"er" + str(exc).encode())
    except MemoryError:
        conn.send_bytes(b"er" + f"Extraction needed more than {limits.memory_mb} MiB.".encode())
    except RecursionError:
        conn.send_bytes(b"er" + b"The file is nested too deeply to read.")
    except Exception:  # noqa: BLE001 - any parser failure is a bad file, said plainly
        conn.send_bytes(b"er" + f"The {kind} file could not be read: it is damaged.".encode())
    finally:
        conn.close()


_CONTEXT = multiprocessing.get_context("forkserver")
# Imported once in the forkserver, so each child starts in milliseconds.
_CONTEXT.set_forkserver_preload(
    [
        "prism.extraction.extract",
        "prism.extraction.language",
        "docx",
        "pypdf",
        "charset_normalizer",
        "phonenumbers",
    ]
)


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """multiprocessing makes every child re-run the program's main module (`prism`, pytest,
    ...) before the target: seconds of imports per document. The target lives in this
    module, so the child needs no main module: hide it while the child is launched."""
    main = sys.modules["__main__"]
    saved = {
        name: main.__dict__.pop(name) for name in ("__spec__", "__file__") if name in main.__dict__
    }
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


async def extract_isolated(path: Path, kind: Kind, limits: Limits) -> Extracted:
    """Extract in a child process bounded in memory and time."""
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    process = _CONTEXT.Process(target=_child, args=(sender, str(path), kind.value, limits))
    try:
        with _main_module_hidden():
            process.start()
    except BaseException:
        receiver.close()
        raise
    finally:
        sender.close()
    try:
        ready = await asyncio.to_thread(receiver.poll, limits.timeout_seconds)
        if not ready:
            raise ExtractionError(
                f"Extraction took longer than {limits.timeout_seconds:g} s; the file was refused."
            )
        try:
            # Bytes, not pickle: the child parsed hostile input and is not trusted.
            message = receiver.recv_bytes()
        except EOFError as exc:  # the child died: killed for memory, or crashed
            raise ExtractionError(
                f"Extraction exceeded its limits ({limits.memory_mb} MiB) and was stopped."
            ) from exc
    finally:
        if process.is_alive():
            process.kill()
        await asyncio.to_thread(process.join, 5)
        receiver.close()
    if message[:2] == b"er":
        raise ExtractionError(message[2:].decode(errors="replace"))
    return Extracted.from_json(message[2:])
