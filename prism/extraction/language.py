"""Language detection of documents and sections, offline (lingua: its n-gram models ship in
the wheel; nothing is downloaded at run time).

A document's language is detected on its whole text (its first ``SAMPLE_CHARS``); a section's
on its own text when it is long enough to tell, else it has the document's. Languages are
ISO 639-1 codes. Prism analyses English, German and French in their own language (search
stemming, the rules analyzer); the other languages detected are recorded, and searched with
the language-neutral ``simple`` analysis. Text too short or too mixed to tell is ``None``.

The detector is built when this module is imported (about 0.1 s, 30 MB in low-accuracy
mode): extraction children import it from their preloaded fork server, so each child has it
for free (and the PII scanner's gazetteer of first names with it)."""

from __future__ import annotations

from collections.abc import Sequence

from lingua import Language, LanguageDetectorBuilder

from prism.extraction.names import first_names

# Languages Prism analyses in their own language.
SUPPORTED = ("en", "de", "fr")
# Also told apart, so a Spanish or Dutch text is not called English, German or French.
DETECTED = (
    Language.ENGLISH,
    Language.GERMAN,
    Language.FRENCH,
    Language.SPANISH,
    Language.ITALIAN,
    Language.DUTCH,
    Language.PORTUGUESE,
    Language.POLISH,
)
SAMPLE_CHARS = 20_000
# A section shorter than this (in letters) takes its document's language.
MIN_SECTION_LETTERS = 40
# The most likely language's share of the confidence needed to call it.
MIN_CONFIDENCE = 0.5

# Extraction children scan for names too: their fork server loads the gazetteer once here.
first_names()
_DETECTOR = (
    LanguageDetectorBuilder.from_languages(*DETECTED)
    .with_low_accuracy_mode()
    .with_preloaded_language_models()
    .build()
)


def detect(text: str) -> str | None:
    """The ISO 639-1 code of ``text``'s language, or None when it cannot be told."""
    sample = text[:SAMPLE_CHARS]
    if sum(ch.isalpha() for ch in sample[:2000]) < 3:
        return None
    values = _DETECTOR.compute_language_confidence_values(sample)
    if not values or values[0].value < MIN_CONFIDENCE:
        return None
    return str(values[0].language.iso_code_639_1.name.lower())


def detect_sections(texts: Sequence[str]) -> tuple[str | None, list[str | None]]:
    """The document's language, and each section's."""
    document = detect("\n".join(texts)[:SAMPLE_CHARS]) if texts else None
    languages: list[str | None] = []
    for text in texts:
        letters = sum(ch.isalpha() for ch in text[:SAMPLE_CHARS])
        languages.append((detect(text) or document) if letters >= MIN_SECTION_LETTERS else document)
    return document, languages
