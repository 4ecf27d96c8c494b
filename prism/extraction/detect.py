"""What a file is, decided from its bytes: never from the client's filename or Content-Type."""

from __future__ import annotations

import zipfile
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from charset_normalizer import from_bytes

TEXT_SAMPLE = 64 * 1024
MAX_ARCHIVE_ENTRIES = 2_000
_EOCD = b"PK\x05\x06"


class Kind(StrEnum):
    PDF = "pdf"
    DOCX = "docx"
    TXT = "txt"

    @property
    def mime_type(self) -> str:
        return {
            Kind.PDF: "application/pdf",
            Kind.DOCX: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            Kind.TXT: "text/plain",
        }[self]


class Unsupported(ValueError):
    """The bytes are none of the kinds Prism reads."""


def detect(path: Path) -> Kind:
    with path.open("rb") as source:
        return detect_stream(source)


def detect_stream(source: BinaryIO) -> Kind:
    """The kind of a seekable file, read from its start (the position is left at 0)."""
    source.seek(0)
    head = source.read(TEXT_SAMPLE)
    source.seek(0)
    if not head:
        raise Unsupported("The file is empty.")
    if head.startswith(b"%PDF-"):
        return Kind.PDF
    if head.startswith(b"PK\x03\x04"):
        _check_entry_count(source)
        try:
            with zipfile.ZipFile(source) as archive:
                names = set(archive.namelist())
        except zipfile.BadZipFile as exc:
            raise Unsupported("The file is a damaged zip archive.") from exc
        finally:
            source.seek(0)
        if "word/document.xml" in names:
            return Kind.DOCX
        raise Unsupported("The file is a zip archive but not a Word (.docx) document.")
    if b"\x00" not in head and from_bytes(head).best() is not None:
        return Kind.TXT
    raise Unsupported("Only .docx, .pdf and plain-text files are accepted.")


def _check_entry_count(source: BinaryIO) -> None:
    """Read the archive's entry count from its end record before anything parses its
    directory (hundreds of thousands of empty entries would cost the API process memory)."""
    source.seek(0, 2)
    size = source.tell()
    source.seek(max(0, size - 65_557))  # the end record and its longest comment
    tail = source.read()
    source.seek(0)
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) < at + 12:
        raise Unsupported("The file is a damaged zip archive.")
    entries = int.from_bytes(tail[at + 10 : at + 12], "little")
    # 0xFFFF means "see the zip64 record": no Word document needs that many parts.
    if entries > MAX_ARCHIVE_ENTRIES:
        raise Unsupported(f"The archive has more than {MAX_ARCHIVE_ENTRIES} parts.")
