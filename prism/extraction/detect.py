"""What a file is, decided from its bytes: never from the client's filename or Content-Type.
Images are also measured here from their headers, read by this module (no image decoder
sees an upload in the API process): a decompression bomb (a small file of a huge picture) or a
TIFF of thousands of pages is refused at the door."""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass
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
    PNG = "png"
    JPEG = "jpeg"
    TIFF = "tiff"

    @property
    def mime_type(self) -> str:
        return {
            Kind.PDF: "application/pdf",
            Kind.DOCX: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            Kind.TXT: "text/plain",
            Kind.PNG: "image/png",
            Kind.JPEG: "image/jpeg",
            Kind.TIFF: "image/tiff",
        }[self]

    @property
    def is_image(self) -> bool:
        return self in IMAGE_KINDS

    @property
    def has_pages(self) -> bool:
        """Whether the kind renders as pages (previews exist, scans are read by OCR)."""
        return self is Kind.PDF or self in IMAGE_KINDS

    @classmethod
    def of_mime_type(cls, mime_type: str) -> Kind | None:
        for kind in cls:
            if kind.mime_type == mime_type:
                return kind
        return None


IMAGE_KINDS = frozenset({Kind.PNG, Kind.JPEG, Kind.TIFF})
# Pillow's name of each image format: only that decoder is tried on the bytes.
PILLOW_FORMATS = {Kind.PNG: "PNG", Kind.JPEG: "JPEG", Kind.TIFF: "TIFF"}


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
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Kind.PNG
    if head.startswith(b"\xff\xd8\xff"):
        return Kind.JPEG
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return Kind.TIFF
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
    raise Unsupported(
        "Only .docx, .pdf, plain-text and image (PNG, JPEG, TIFF) files are accepted."
    )


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


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int
    max_frames: int


@dataclass(frozen=True)
class ImageSize:
    width: int
    height: int
    frames: int


def measure_image(source: BinaryIO, kind: Kind, limits: ImageLimits) -> ImageSize:
    """An image's size read from its headers by this module (no decoder sees the bytes),
    refused (``Unsupported``) when damaged, larger than ``limits.max_pixels`` (on any page)
    or of more than ``limits.max_frames`` pages. The position is left at 0."""
    try:
        if kind is Kind.PNG:
            sizes = [_png_size(source)]
        elif kind is Kind.JPEG:
            sizes = [_jpeg_size(source)]
        else:
            sizes = _tiff_sizes(source, limits.max_frames + 1)
    except (_Damaged, struct.error) as exc:
        raise Unsupported(f"The file is a damaged {kind.name} image.") from exc
    finally:
        source.seek(0)
    if len(sizes) > limits.max_frames:
        raise Unsupported(
            f"The {kind.name} has more than {limits.max_frames} pages; it is refused."
        )
    for width, height in sizes:
        if width <= 0 or height <= 0:
            raise Unsupported(f"The file is a damaged {kind.name} image.")
        if width * height > limits.max_pixels:
            raise Unsupported(
                f"The image is {width}×{height} pixels; at most {limits.max_pixels:,} pixels "
                "are accepted (a decompression bomb?)."
            )
    width, height = sizes[0]
    return ImageSize(width, height, len(sizes))


class _Damaged(Exception):
    pass


def _read(source: BinaryIO, size: int) -> bytes:
    data = source.read(size)
    if len(data) < size:
        raise _Damaged
    return data


def _png_size(source: BinaryIO) -> tuple[int, int]:
    source.seek(8)
    length, chunk = struct.unpack(">I4s", _read(source, 8))
    if chunk != b"IHDR" or length != 13:
        raise _Damaged
    width, height = struct.unpack(">II", _read(source, 8))
    return int(width), int(height)


# Start-of-frame markers (baseline, progressive, lossless, ...): not DHT, JPG or DAC.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_MAX_JPEG_SEGMENTS = 10_000


def _jpeg_size(source: BinaryIO) -> tuple[int, int]:
    source.seek(2)
    for _ in range(_MAX_JPEG_SEGMENTS):
        if _read(source, 1) != b"\xff":
            raise _Damaged
        marker = _read(source, 1)[0]
        while marker == 0xFF:  # fill bytes
            marker = _read(source, 1)[0]
        if marker in (0x01, *range(0xD0, 0xD8)):
            continue  # no length
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before
            raise _Damaged
        (length,) = struct.unpack(">H", _read(source, 2))
        if length < 2:
            raise _Damaged
        if marker in _SOF:
            _precision, height, width = struct.unpack(">BHH", _read(source, 5))
            return int(width), int(height)
        source.seek(length - 2, 1)
    raise _Damaged


def _tiff_sizes(source: BinaryIO, stop_at: int) -> list[tuple[int, int]]:
    """Each page's size, following the chain of image file directories (at most
    ``stop_at`` of them; a loop in the chain ends it)."""
    source.seek(0)
    header = _read(source, 8)
    order = "<" if header[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", header[4:8])
    seen: set[int] = set()
    sizes: list[tuple[int, int]] = []
    while offset and offset not in seen and len(sizes) < stop_at:
        seen.add(offset)
        source.seek(offset)
        (entries,) = struct.unpack(order + "H", _read(source, 2))
        width = height = 0
        for _ in range(entries):
            tag, kind, _count, value = struct.unpack(order + "HHI4s", _read(source, 12))
            if tag in (256, 257):
                number = (
                    struct.unpack(order + "H", value[:2])[0]
                    if kind == 3
                    else struct.unpack(order + "I", value)[0]
                )
                if tag == 256:
                    width = int(number)
                else:
                    height = int(number)
        sizes.append((width, height))
        (offset,) = struct.unpack(order + "I", _read(source, 4))
    if not sizes:
        raise _Damaged
    return sizes
