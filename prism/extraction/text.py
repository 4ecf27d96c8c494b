"""Plain-text sectioning: headings start sections, everything else is their body."""

from __future__ import annotations

import re
from dataclasses import dataclass

# "1. Term", "2.3 Liability", "ARTICLE IV", "Section 5 - Fees", or a short ALL-CAPS line.
_HEADING = re.compile(
    r"^(?:(?:\d+(?:\.\d+)*\.?|(?i:article)\s+[IVXLCivxlc\d]+|(?i:section)\s+\d+)[\s:.-]+\S.{0,100}"
    r"|[A-Z][A-Z0-9 ,&/()-]{2,80})$"
)
_WORD = re.compile(r"\b\w+\b")
MAX_HEADING_WORDS = 12


@dataclass(frozen=True)
class TextSection:
    name: str
    content: str

    @property
    def word_count(self) -> int:
        return count_words(self.content)


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def _is_heading(line: str) -> bool:
    stripped = line.strip()
    if not stripped or len(stripped.split()) > MAX_HEADING_WORDS:
        return False
    if stripped.endswith((".", ";", ",", ":")):
        return False
    return bool(_HEADING.match(stripped))


def split_sections(text: str, *, default_name: str = "Document") -> list[TextSection]:
    """Sections in text order; text before the first heading becomes a section of its own."""
    sections: list[TextSection] = []
    name = default_name
    body: list[str] = []

    def flush() -> None:
        content = "\n".join(body).strip()
        if content:
            sections.append(TextSection(name=name[:500], content=content))

    for line in text.splitlines():
        if _is_heading(line):
            flush()
            name, body = line.strip(), []
        else:
            body.append(line)
    flush()
    return sections or [TextSection(name=default_name, content=text.strip())]
