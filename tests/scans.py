"""Scans made in the test: known text rendered into a page image with Pillow, saved as PNG,
JPEG, TIFF or an image-only PDF (no text layer); and hostile images built byte by byte."""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib

import pytest
from PIL import Image, ImageDraw, ImageFont

SCANNED_LINES = (
    "SUPPLY AGREEMENT",
    "",
    "1. Term",
    "This agreement renews automatically for successive one-year terms.",
    "",
    "2. Liability",
    "The supplier accepts unlimited liability for indirect damages.",
)


def page_image(lines: tuple[str, ...] = SCANNED_LINES, *, marker: str = "") -> Image.Image:
    """A white page with black text, like a 150 dpi scan of half a letter page."""
    font = ImageFont.load_default(size=34)
    image = Image.new("L", (1650, 620 + 56 * (1 if marker else 0)), 255)
    draw = ImageDraw.Draw(image)
    y = 70
    for line in (*lines, *((marker,) if marker else ())):
        draw.text((90, y), line, fill=0, font=font)
        y += 56
    return image


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(out, format="JPEG", quality=80)
    elif fmt == "PDF":
        image.convert("RGB").save(out, format="PDF", resolution=150)
    else:
        image.save(out, format=fmt)
    return out.getvalue()


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A real decompression bomb: a PNG of ``width`` × ``height`` black grayscale pixels
    (400 MB decoded by default) in a few hundred kilobytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte, then the pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def many_page_tiff(pages: int) -> bytes:
    out = io.BytesIO()
    frames = [Image.new("L", (8, 8), 255) for _ in range(pages)]
    frames[0].save(out, format="TIFF", save_all=True, append_images=frames[1:])
    return out.getvalue()


def require_tesseract() -> None:
    """Skip without Tesseract (``make install`` installs it); under CI it must be there."""
    if shutil.which("tesseract") is not None:
        return
    message = "tesseract is not installed (make install installs tesseract-ocr as root)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
