"""Pages as pictures: a PDF's pages rendered with PDFium (pypdfium2), an image's frames read
with Pillow, each bounded in pixels; used for OCR and for page previews (PNG). Runs only
inside the bounded extraction child process (``prism.extraction.extract``): the bytes are
hostile until proven otherwise."""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prism.extraction.detect import PILLOW_FORMATS, ImageLimits, Kind, Unsupported, measure_image

if TYPE_CHECKING:
    from PIL.Image import Image

POINTS_PER_INCH = 72


class PageError(Exception):
    """The page cannot be shown or read; the message is for a person."""


@dataclass(frozen=True)
class PageLimits:
    max_pixels: int = 50_000_000
    max_pages: int = 100


def _pillow_guard(max_pixels: int) -> None:
    from PIL import Image

    # Pillow refuses to decode anything larger (its own decompression-bomb check), in this
    # process only (the child's copy of the module).
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)


@contextmanager
def open_image(path: Path, kind: Kind, limits: PageLimits) -> Iterator[Image]:
    """The image, measured before it is decoded (PageError when too large or damaged)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with path.open("rb") as source:
            # The door's check again, by header: the file may predate today's limits.
            measure_image(source, kind, ImageLimits(limits.max_pixels, limits.max_pages))
    except Unsupported as exc:
        raise PageError(str(exc)) from exc
    _pillow_guard(limits.max_pixels)
    try:
        image = Image.open(path, formats=[PILLOW_FORMATS[kind]])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PageError(_too_large(limits)) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise PageError(f"The {kind.name} image could not be read: it is damaged.") from exc
    with image:
        width, height = image.size
        if width * height > limits.max_pixels:
            raise PageError(_too_large(limits, width, height))
        yield image


def _too_large(limits: PageLimits, width: int | None = None, height: int | None = None) -> str:
    size = f"{width}×{height} pixels" if width is not None else "too large"
    return (
        f"The image is {size}; at most {limits.max_pixels:,} pixels are accepted "
        "(a decompression bomb?)."
    )


def image_frames(path: Path, kind: Kind, limits: PageLimits, *, mode: str = "L") -> Iterator[Image]:
    """Each frame (a TIFF's pages; one for PNG and JPEG) in ``mode`` (grayscale unless
    told), decoded one at a time.
    A TIFF with more than ``limits.max_pages`` pages is refused before any is decoded."""
    from PIL import Image

    with open_image(path, kind, limits) as image:
        frames = int(getattr(image, "n_frames", 1))
        if frames > limits.max_pages:
            raise PageError(f"The image has {frames} pages; at most {limits.max_pages} are read.")
        for index in range(frames):
            try:
                image.seek(index)
                width, height = image.size
                if width * height > limits.max_pixels:
                    raise PageError(_too_large(limits, width, height))
                yield image.convert(mode)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise PageError(_too_large(limits)) from exc
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                raise PageError(
                    f"Page {index + 1} of the image could not be read: it is damaged."
                ) from exc


def open_pdf(path: Path) -> Any:
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        raise PageError("The PDF could not be read: it is damaged or password-protected.") from exc


def render_pdf_page(pdf: Any, index: int, *, dpi: float, max_pixels: int) -> Image:
    """Page ``index`` in grayscale at ``dpi``, or less when that would exceed ``max_pixels``
    (a page declared kilometres wide renders small instead of exhausting memory)."""
    page = pdf[index]
    try:
        width, height = page.get_size()
        if not (width > 0 and height > 0):
            raise PageError(f"Page {index + 1} of the PDF has no size.")
        scale = dpi / POINTS_PER_INCH
        if width * height * scale * scale > max_pixels:
            scale = math.sqrt(max_pixels / (width * height)) * 0.99
        bitmap = page.render(scale=scale, grayscale=True, limit_image_cache=True)
        try:
            image: Image = bitmap.to_pil().convert("L")
        finally:
            bitmap.close()
        return image
    finally:
        page.close()


@dataclass(frozen=True)
class PreviewLimits:
    width: int = 1000
    max_pages: int = 50
    max_pixels: int = 50_000_000


def preview_png(path: Path, kind: Kind, page: int, limits: PreviewLimits) -> bytes:
    """Page ``page`` (1-based) as a PNG at most ``limits.width`` pixels wide (and at most
    four times as tall), without any metadata of the original."""
    if page < 1 or page > limits.max_pages:
        raise PageError(f"Previews exist for pages 1 to {limits.max_pages}.")
    if kind is Kind.PDF:
        pdf = open_pdf(path)
        try:
            if page > len(pdf):
                raise PageError(f"The document has {len(pdf)} pages.")
            first = pdf[page - 1]
            try:
                points = first.get_width()
            finally:
                first.close()
            dpi = limits.width / max(points, 1) * POINTS_PER_INCH
            image = render_pdf_page(
                pdf,
                page - 1,
                dpi=dpi,
                max_pixels=min(limits.max_pixels, limits.width * limits.width * 4),
            )
        finally:
            pdf.close()
    elif kind.is_image:
        image = _image_page(path, kind, page, limits)
    else:
        raise PageError("Only PDFs and images have page previews.")
    image.thumbnail((limits.width, limits.width * 4))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _image_page(path: Path, kind: Kind, page: int, limits: PreviewLimits) -> Image:
    bounds = PageLimits(max_pixels=limits.max_pixels, max_pages=limits.max_pages)
    for index, frame in enumerate(image_frames(path, kind, bounds, mode="RGB"), start=1):
        if index == page:
            return frame
    raise PageError("The image has fewer pages.")
