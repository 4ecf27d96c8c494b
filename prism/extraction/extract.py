"""Text extraction into sections, bounded against hostile files.

Every extraction runs in a child process (forked from a preloaded forkserver) with an
address-space limit and a wall-clock timeout: a zip bomb, a PDF stream bomb or a parser loop
kills a child, never the worker. Inside, each format is also checked before it is parsed:
actual inflated bytes and entry counts of OOXML archives, no DTDs or entity declarations in
their XML, no password-protected PDFs, a page cap; images measured before they are decoded.

Scanned pages (a PDF page with images and no text layer, an image file) are read by
Tesseract (``prism.extraction.ocr``) from pages rendered by ``prism.extraction.pages``, in
the same child; the child tells its parent when OCR starts, which then allows it
``ocr.timeout_seconds`` more. Page previews are rendered in such a child too."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import re
import resource
import signal
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
from charset_normalizer import from_bytes

from prism.extraction.detect import Kind
from prism.extraction.ocr import (
    Deadline,
    OcrError,
    OcrLimits,
    OcrText,
    combined_confidence,
    recognize,
)
from prism.extraction.pages import (
    PageError,
    PageLimits,
    PreviewLimits,
    image_frames,
    open_pdf,
    preview_png,
    render_pdf_page,
)
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
    # Images and rendered pages: pixels and pages (of a TIFF; PDF pages read by OCR).
    pages: PageLimits = field(default_factory=PageLimits)
    ocr: OcrLimits = field(default_factory=OcrLimits)
    preview: PreviewLimits = field(default_factory=PreviewLimits)


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
    # Per section: whether its text came from OCR, and Tesseract's confidence in it (0..1);
    # empty when no section did.
    ocr: list[tuple[bool, float | None]] = field(default_factory=list)

    def ocr_of(self, index: int) -> tuple[bool, float | None]:
        return self.ocr[index] if index < len(self.ocr) else (False, None)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "sections": [[s.name, s.content] for s in self.sections],
                "page_count": self.page_count,
                "word_count": self.word_count,
                "findings": self.findings,
                "language": self.language,
                "languages": self.languages,
                "ocr": self.ocr,
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
            ocr=[(bool(flag), _fraction(c)) for flag, c in raw.get("ocr") or []],
        )


def _language_code(value: object) -> str | None:
    """A language code from the (untrusted) child: two lower-case letters, or nothing."""
    if isinstance(value, str) and len(value) == 2 and value.isascii() and value.islower():
        return value
    return None


def _fraction(value: object) -> float | None:
    """A confidence the child reported, held to 0..1 (the child read hostile input)."""
    if not isinstance(value, int | float):
        return None
    return min(max(float(value), 0.0), 1.0)


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


def extract_pdf(
    path: Path, max_pages: int, limits: Limits | None = None, on_ocr: Callable[[], object] = bool
) -> Extracted:
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
    scanned = [i for i, text in enumerate(texts) if not text and _draws_images(reader.pages[i])]
    read = _ocr_scanned_pages(path, texts, scanned, limits or Limits(), on_ocr)
    outline = _pdf_outline_sections(reader, texts)
    if outline:
        sections = [section for section, _ in outline]
        ocr = [_ocr_of_span(read, span) for _, span in outline]
    else:
        sections = [
            TextSection(name=f"Page {i + 1}", content=text) for i, text in enumerate(texts) if text
        ]
        ocr = [_ocr_of_span(read, range(i, i + 1)) for i, text in enumerate(texts) if text]
    if not sections:
        raise ExtractionError("The PDF contains no text, and no page is a scan OCR could read.")
    return Extracted(
        sections=sections,
        page_count=pages,
        word_count=sum(count_words(t) for t in texts),
        ocr=ocr if read else [],
    )


def _draws_images(page: Any, depth: int = 0) -> bool:
    """Whether a page (or a form it draws) has image XObjects: read from its resources,
    without inflating its content stream."""
    try:
        resources = page.get("/Resources")
        xobjects = resources.get_object().get("/XObject") if resources is not None else None
        if xobjects is None:
            return False
        for reference in xobjects.get_object().values():
            xobject = reference.get_object()
            subtype = xobject.get("/Subtype")
            if subtype == "/Image":
                return True
            if subtype == "/Form" and depth < 3 and _draws_images(xobject, depth + 1):
                return True
    except Exception:  # noqa: BLE001 - damaged resources: not a page OCR can read
        return False
    return False


def _ocr_scanned_pages(
    path: Path,
    texts: list[str],
    scanned: list[int],
    limits: Limits,
    on_ocr: Callable[[], object],
) -> dict[int, OcrText]:
    """Read the ``scanned`` pages (no text layer, but images) with Tesseract, in place in
    ``texts``; the OCR of each page read. At most ``limits.pages.max_pages`` are read."""
    if not scanned:
        return {}
    if len(scanned) > limits.pages.max_pages:
        raise ExtractionError(
            f"The PDF has {len(scanned)} scanned pages; at most {limits.pages.max_pages} "
            "are read by OCR."
        )
    try:
        pdf = open_pdf(path)
    except PageError as exc:
        raise ExtractionError(str(exc)) from exc
    try:
        on_ocr()
        deadline = Deadline(limits.ocr.timeout_seconds)
        read: dict[int, OcrText] = {}
        for index in scanned:
            image = render_pdf_page(
                pdf, index, dpi=limits.ocr.dpi, max_pixels=limits.pages.max_pixels
            )
            read[index] = recognize(image, limits.ocr, deadline)
            texts[index] = read[index].text.strip()
        return read
    finally:
        pdf.close()


def _ocr_of_span(read: dict[int, OcrText], pages: range) -> tuple[bool, float | None]:
    parts = [read[i] for i in pages if i in read]
    return (bool(parts), combined_confidence(parts) if parts else None)


def extract_image(
    path: Path, kind: Kind, limits: Limits, on_ocr: Callable[[], object] = bool
) -> Extracted:
    """A photo or scan of pages (PNG, JPEG, TIFF), read by Tesseract page by page."""
    on_ocr()
    deadline = Deadline(limits.ocr.timeout_seconds)
    frames = image_frames(path, kind, limits.pages)
    pages = [recognize(frame, limits.ocr, deadline) for frame in frames]
    text = "\n\n".join(page.text for page in pages).strip()
    if not text:
        raise ExtractionError("OCR found no text in the image.")
    sections = split_sections(text)
    confidence = combined_confidence(pages)
    return Extracted(
        sections=sections,
        page_count=len(pages),
        word_count=count_words(text),
        ocr=[(True, confidence)] * len(sections),
    )


def _pdf_outline_sections(reader: Any, texts: list[str]) -> list[tuple[TextSection, range]]:
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
        span = range(start, max(end, start + 1))
        content = "\n".join(texts[span.start : span.stop]).strip()
        if content:
            sections.append((TextSection(name=str(title)[:500], content=content), span))
    return sections


def extract_file(
    path: Path, kind: Kind, limits: Limits, on_ocr: Callable[[], object] = bool
) -> Extracted:
    if kind is Kind.TXT:
        return extract_txt(path)
    if kind is Kind.DOCX:
        return extract_docx(path)
    if kind.is_image:
        return extract_image(path, kind, limits, on_ocr)
    return extract_pdf(path, limits.max_pages, limits, on_ocr)


# --- isolation -------------------------------------------------------------------------------


def _bound_child(limits: Limits) -> None:
    """In the child: its own process group (Tesseract, its child, is killed with it) and
    its address-space limit (which Tesseract inherits)."""
    os.setpgid(0, 0)
    limit = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _child(conn: Connection, path: str, kind: str, limits: Limits) -> None:
    _bound_child(limits)
    try:
        extracted = extract_file(Path(path), Kind(kind), limits, lambda: conn.send_bytes(OCR))
        conn.send_bytes(b"ok" + _bounded(extracted).to_json())
    except (ExtractionError, OcrError, PageError) as exc:
        conn.send_bytes(b"er" + str(exc).encode())
    except MemoryError:
        conn.send_bytes(b"er" + f"Extraction needed more than {limits.memory_mb} MiB.".encode())
    except RecursionError:
        conn.send_bytes(b"er" + b"The file is nested too deeply to read.")
    except Exception:  # noqa: BLE001 - any parser failure is a bad file, said plainly
        conn.send_bytes(b"er" + f"The {kind} file could not be read: it is damaged.".encode())
    finally:
        conn.close()


def _preview_child(conn: Connection, path: str, kind: str, page: int, limits: Limits) -> None:
    _bound_child(limits)
    try:
        conn.send_bytes(b"ok" + preview_png(Path(path), Kind(kind), page, limits.preview))
    except PageError as exc:
        conn.send_bytes(b"nf" + str(exc).encode())
    except MemoryError:
        conn.send_bytes(b"er" + f"The preview needed more than {limits.memory_mb} MiB.".encode())
    except Exception:  # noqa: BLE001 - any renderer failure is a bad file, said plainly
        conn.send_bytes(b"er" + f"The {kind} file could not be rendered: it is damaged.".encode())
    finally:
        conn.close()


# What the child sends before OCR starts: its parent then allows it the OCR's time too.
OCR = b"oc"


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
        "pypdfium2",
        "PIL.Image",
        "pytesseract",
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


class NoPreview(Exception):
    """The page has no preview (not a PDF or an image, or no such page)."""


async def extract_isolated(path: Path, kind: Kind, limits: Limits) -> Extracted:
    """Extract in a child process bounded in memory and time."""
    message = await _run_isolated(_child, (str(path), kind.value, limits), limits, "Extraction")
    if message[:2] == b"er":
        raise ExtractionError(message[2:].decode(errors="replace"))
    return Extracted.from_json(message[2:])


async def preview_isolated(path: Path, kind: Kind, page: int, limits: Limits) -> bytes:
    """Page ``page`` (1-based) as a PNG, rendered in a child process bounded like an
    extraction. Raises ``NoPreview`` or ``ExtractionError``."""
    message = await _run_isolated(
        _preview_child, (str(path), kind.value, page, limits), limits, "The preview"
    )
    if message[:2] == b"nf":
        raise NoPreview(message[2:].decode(errors="replace"))
    if message[:2] == b"er":
        raise ExtractionError(message[2:].decode(errors="replace"))
    return message[2:]


async def _run_isolated(
    target: Callable[..., None], args: tuple[Any, ...], limits: Limits, what: str
) -> bytes:
    """Run ``target(sender, *args)`` in a child process; its one message (after any OCR
    notice), within ``limits.timeout_seconds`` (plus ``limits.ocr.timeout_seconds`` once
    the child says OCR started)."""
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    process = _CONTEXT.Process(target=target, args=(sender, *args))
    try:
        with _main_module_hidden():
            process.start()
    except BaseException:
        receiver.close()
        raise
    finally:
        sender.close()
    try:
        timeout = limits.timeout_seconds
        while True:
            ready = await asyncio.to_thread(receiver.poll, timeout)
            if not ready:
                raise ExtractionError(
                    f"{what} took longer than {timeout:g} s; the file was refused."
                )
            try:
                # Bytes, not pickle: the child parsed hostile input and is not trusted.
                message = receiver.recv_bytes()
            except EOFError as exc:  # the child died: killed for memory, or crashed
                raise ExtractionError(
                    f"{what} exceeded its limits ({limits.memory_mb} MiB) and was stopped."
                ) from exc
            if message != OCR:
                return message
            timeout = limits.timeout_seconds + limits.ocr.timeout_seconds
    finally:
        _kill_group(process.pid)
        if process.is_alive():
            process.kill()
        await asyncio.to_thread(process.join, 5)
        receiver.close()


def _kill_group(pid: int | None) -> None:
    """End whatever the child left running (Tesseract) with it: its process group."""
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
