"""The built-in rules analyzer: deterministic, free, and useful on its own."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from decimal import Decimal

from prism.analysis import Item, Outcome
from prism.models.enums import RiskLevel

MODEL = "prism-rules"
VERSION = "1.0"
LONG_SENTENCE_WORDS = 60


@dataclass(frozen=True)
class Rule:
    code: str
    category: str
    pattern: re.Pattern[str]
    risk: RiskLevel
    confidence: float
    description: str
    suggestion: str


RULES: tuple[Rule, ...] = (
    Rule(
        "unlimited-liability",
        "LIABILITY",
        re.compile(
            r"\b(unlimited liability|without (any )?limit(ation)? (of|on) liability|"
            r"liability shall not be limited)\b",
            re.I,
        ),
        RiskLevel.HIGH,
        0.9,
        "Liability is unlimited.",
        "Cap liability, for example at the fees paid in the previous twelve months.",
    ),
    Rule(
        "indemnity",
        "INDEMNITY",
        re.compile(r"\b(indemnif(y|ies|ication)|hold harmless)\b", re.I),
        RiskLevel.MEDIUM,
        0.8,
        "The clause creates an indemnity obligation.",
        "Limit the indemnity to third-party claims caused by the indemnifying party.",
    ),
    Rule(
        "auto-renewal",
        "TERM",
        re.compile(
            r"\b(automatically renew(s|ed)?|auto-?renew(al)?|renew(s)? automatically)\b", re.I
        ),
        RiskLevel.MEDIUM,
        0.85,
        "The agreement renews automatically.",
        "Require written notice before renewal, or a right to cancel at renewal.",
    ),
    Rule(
        "unilateral-termination",
        "TERMINATION",
        re.compile(
            r"\b(terminate[^.]{0,40}\b(at any time|for convenience|sole discretion)|"
            r"sole (and absolute )?discretion)\b",
            re.I,
        ),
        RiskLevel.HIGH,
        0.8,
        "One party may act unilaterally (termination or discretion).",
        "Make termination mutual and require a notice period.",
    ),
    Rule(
        "vague-terms",
        "CLARITY",
        re.compile(
            r"\b(reasonable efforts|best efforts|as soon as (reasonably )?practicable|"
            r"from time to time|material(ly)? adverse|including but not limited to)\b",
            re.I,
        ),
        RiskLevel.LOW,
        0.6,
        "The clause relies on vague or undefined terms.",
        "Define the term or replace it with a measurable obligation.",
    ),
)

_SENTENCE = re.compile(r"[^.!?]+[.!?]?")


def _quote(text: str, start: int, end: int, width: int = 60) -> str:
    return text[max(0, start - width // 2) : end + width // 2].strip()


class RulesAnalyzer:
    name = "rules"

    async def analyze(self, *, section_name: str, text: str, pii_types: list[str]) -> Outcome:
        # Regexes over a long section take a while: off the event loop, which may be serving
        # HTTP too (`prism serve --with-worker`).
        return await asyncio.to_thread(analyze_text, text, pii_types)


def analyze_text(text: str, pii_types: list[str]) -> Outcome:
    items: list[Item] = []
    for rule in RULES:
        match = rule.pattern.search(text)
        if match:
            items.append(
                Item(
                    id=f"{rule.code}-{match.start()}",
                    category=rule.category,
                    description=rule.description,
                    suggestion=rule.suggestion,
                    risk_level=rule.risk,
                    confidence=rule.confidence,
                    quote=_quote(text, match.start(), match.end()),
                )
            )
    if pii_types:
        kinds = ", ".join(sorted(set(pii_types)))
        items.append(
            Item(
                id="pii-exposure",
                category="PRIVACY",
                description=f"The section contains personal data ({kinds}).",
                suggestion="Remove personal data or restrict the document's classification.",
                risk_level=RiskLevel.HIGH
                if {"SSN", "CREDIT_CARD"} & set(pii_types)
                else RiskLevel.MEDIUM,
                confidence=0.9,
            )
        )
    for sentence in _SENTENCE.finditer(text):
        words = len(sentence.group().split())
        if words > LONG_SENTENCE_WORDS:
            items.append(
                Item(
                    id=f"long-sentence-{sentence.start()}",
                    category="READABILITY",
                    description=f"A sentence of {words} words is hard to read.",
                    suggestion="Split it into shorter sentences.",
                    risk_level=RiskLevel.LOW,
                    confidence=0.7,
                    quote=sentence.group()[:120].strip(),
                )
            )
    risk = max((i.risk_level for i in items), key=lambda r: r.rank, default=RiskLevel.LOW)
    confidence = round(sum(i.confidence for i in items) / len(items), 4) if items else 0.95
    return Outcome(
        model=MODEL,
        model_version=VERSION,
        items=items,
        risk_level=risk,
        confidence=confidence,
        tokens_used=0,
        cost_usd=Decimal("0"),
    )
