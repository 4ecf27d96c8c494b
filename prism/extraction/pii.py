"""PII detection on section text. Findings keep the type, offsets and a confidence; the
matched text itself is never stored, so masking needs only the findings and the text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Finding:
    type: str
    start: int
    end: int
    confidence: float

    def as_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "start": self.start,
            "end": self.end,
            "confidence": self.confidence,
        }


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_PATTERNS: list[tuple[str, re.Pattern[str], float]] = [
    # Bounded parts, and a match only starts where a run of address characters starts: no
    # quadratic re-scanning of hostile text such as "a.a.a.a…".
    (
        "EMAIL",
        re.compile(
            r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}"
            r"(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}\b"
        ),
        0.95,
    ),
    ("SSN", re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"), 0.9),
    ("CREDIT_CARD", re.compile(r"\b(?:\d[ -]?){13,19}\b"), 0.9),
    (
        "PHONE",
        re.compile(
            r"(?<![\w-])(?:\+?1[ .-]?)?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b"
            r"|(?<![\w-])\+\d{1,3}[ .-]\d{2,4}[ .-]\d{3,4}[ .-]?\d{0,4}\b"
        ),
        0.8,
    ),
    (
        "IP_ADDRESS",
        re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
        0.85,
    ),
    (
        "DATE_OF_BIRTH",
        re.compile(
            r"(?i)\b(?:born(?: on)?|date of birth|d\.?o\.?b\.?)[:\s]+"
            r"(?:\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{4}-\d{2}-\d{2}|[A-Z][a-z]+ \d{1,2},? \d{4})"
        ),
        0.85,
    ),
    (
        "STREET_ADDRESS",
        re.compile(
            r"\b\d{1,5}\s+(?:[A-Z][a-z]+\s){1,3}"
            r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way)\b\.?"
        ),
        0.7,
    ),
]


def scan(text: str) -> list[Finding]:
    """Non-overlapping findings, in text order (a longer, earlier match wins)."""
    found: list[Finding] = []
    for kind, pattern, confidence in _PATTERNS:
        for match in pattern.finditer(text):
            if kind == "CREDIT_CARD":
                digits = re.sub(r"\D", "", match.group())
                if not 13 <= len(digits) <= 19 or not _luhn_ok(digits):
                    continue
            found.append(Finding(kind, match.start(), match.end(), confidence))
    found.sort(key=lambda f: (f.start, -(f.end - f.start)))
    result: list[Finding] = []
    for finding in found:
        if result and finding.start < result[-1].end:
            continue
        result.append(finding)
    return result


def mask_all(text: str) -> str:
    """Mask whatever the scanner finds now (for text without stored findings: headings,
    quotes, descriptions)."""
    return mask(text, [f.as_json() for f in scan(text)])


def mask(text: str, findings: list[dict[str, Any]]) -> str:
    """Replace each finding by ``[TYPE]``; offsets refer to the unmasked text."""
    parts: list[str] = []
    position = 0
    for f in sorted(findings, key=lambda f: int(f["start"])):
        start, end = int(f["start"]), int(f["end"])
        if start < position or end > len(text):
            continue
        parts.append(text[position:start])
        parts.append(f"[{f['type']}]")
        position = end
    parts.append(text[position:])
    return "".join(parts)
