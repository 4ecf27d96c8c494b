"""Optical character recognition with Tesseract (Debian's ``tesseract-ocr``, through
pytesseract), for scanned PDF pages and images. Runs only inside the bounded extraction child
process: Tesseract is its child, so it inherits the memory limit and dies with its process
group when the time limit kills the extraction."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL.Image import Image


class OcrError(Exception):
    """Tesseract could not read the page; the message is for a person."""


@dataclass(frozen=True)
class OcrLimits:
    languages: str = "eng+deu+fra"
    timeout_seconds: float = 300
    dpi: int = 300


@dataclass(frozen=True)
class OcrText:
    text: str
    # The mean of Tesseract's word confidences, 0..1 (None: no word was recognised).
    confidence: float | None
    words: int


def tesseract_available() -> bool:
    return shutil.which("tesseract") is not None


class Deadline:
    """What is left of one extraction's OCR time, shared by its pages."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds

    def left(self) -> float:
        left = self.ends - time.monotonic()
        if left <= 0:
            raise OcrError(f"OCR took longer than {self.seconds:g} s; the file was refused.")
        return left


def recognize(image: Image, limits: OcrLimits, deadline: Deadline) -> OcrText:
    """The text of one page image, lines and paragraphs as Tesseract found them."""
    import pytesseract

    if not tesseract_available():
        raise OcrError("OCR is not available on this server (Tesseract is not installed).")
    # One thread per Tesseract: workers run several extractions at once.
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    try:
        data: dict[str, list[Any]] = pytesseract.image_to_data(
            image,
            lang=limits.languages,
            config=f"--psm 3 --dpi {limits.dpi}",
            output_type=pytesseract.Output.DICT,
            timeout=deadline.left(),
        )
    except RuntimeError as exc:  # pytesseract's timeout
        raise OcrError(
            f"OCR took longer than {deadline.seconds:g} s; the file was refused."
        ) from exc
    except pytesseract.TesseractError as exc:
        raise OcrError(f"OCR failed: {str(exc.message).strip()[:200]}") from exc
    return _assemble(data)


def _assemble(data: dict[str, list[Any]]) -> OcrText:
    """Words joined into lines, lines into paragraphs (a blank line between paragraphs)."""
    paragraphs: dict[tuple[int, int, int], dict[int, list[str]]] = {}
    confidences: list[float] = []
    for i, word in enumerate(data.get("text", [])):
        text = str(word).strip()
        if int(data["level"][i]) != 5 or not text:
            continue
        key = (int(data["page_num"][i]), int(data["block_num"][i]), int(data["par_num"][i]))
        paragraphs.setdefault(key, {}).setdefault(int(data["line_num"][i]), []).append(text)
        confidence = float(data["conf"][i])
        if confidence >= 0:
            confidences.append(confidence)
    text = "\n\n".join(
        "\n".join(" ".join(words) for _, words in sorted(lines.items()))
        for _, lines in sorted(paragraphs.items())
    )
    mean = round(sum(confidences) / len(confidences) / 100, 4) if confidences else None
    return OcrText(text=text, confidence=mean, words=len(confidences))


def combined_confidence(parts: list[OcrText]) -> float | None:
    """The confidence of text made of several pages: their means weighted by word count."""
    words = sum(p.words for p in parts if p.confidence is not None)
    if not words:
        return None
    total = sum((p.confidence or 0) * p.words for p in parts if p.confidence is not None)
    return round(total / words, 4)
