"""The built-in rules analyzer: deterministic, free, and useful on its own. Its rules are
worded in English, German and French."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from decimal import Decimal

from prism.analysis import Item, Outcome
from prism.models.enums import RiskLevel

MODEL = "prism-rules"
VERSION = "1.1"
LONG_SENTENCE_WORDS = 60


@dataclass(frozen=True)
class Rule:
    code: str
    category: str
    # The rule's wording in each language it knows (ISO 639-1 code -> pattern). Every
    # language's pattern is tried on every text: a clause is flagged even when its section's
    # language was told wrong (or a German contract quotes an English clause).
    patterns: dict[str, re.Pattern[str]]
    risk: RiskLevel
    confidence: float
    description: str
    suggestion: str

    def search(self, text: str) -> re.Match[str] | None:
        """The earliest match in any language."""
        found = [m for p in self.patterns.values() if (m := p.search(text))]
        return min(found, key=lambda m: m.start(), default=None)


def _i(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.I)


RULES: tuple[Rule, ...] = (
    Rule(
        "unlimited-liability",
        "LIABILITY",
        {
            "en": _i(
                r"\b(unlimited liability|without (any )?limit(ation)? (of|on) liability|"
                r"liability shall not be limited)\b"
            ),
            # "haftet unbeschränkt", "haftet dem Kunden gegenüber unbegrenzt", "unbeschränkte
            # Haftung", "die Haftung ist nicht beschränkt", "ohne Haftungsbegrenzung"
            "de": _i(
                r"\b(haftet|haften)\b[^.;]{0,60}?\b(unbeschränkt|unbegrenzt)|"
                r"\b(unbeschränkte|unbegrenzte)[nr]?\s+Haftung\b|"
                r"\bHaftung\s+(ist\s+|wird\s+)?(der\s+Höhe\s+nach\s+)?nicht\s+"
                r"(beschränkt|begrenzt)|\bohne\s+(jede\s+)?Haftungs(begrenzung|beschränkung)\b"
            ),
            # "responsabilité illimitée", "sa responsabilité n'est pas limitée", "sans
            # limitation de responsabilité"
            "fr": _i(
                r"\bresponsabilité\s+(est\s+)?illimitée|"
                r"\bresponsabilité\s+n['’]est\s+pas\s+limitée|"
                r"\bsans\s+(aucune\s+)?limit(e|ation)\s+de\s+(sa\s+)?responsabilité|"
                r"\bresponsable\s+de\s+manière\s+illimitée"
            ),
        },
        RiskLevel.HIGH,
        0.9,
        "Liability is unlimited.",
        "Cap liability, for example at the fees paid in the previous twelve months.",
    ),
    Rule(
        "indemnity",
        "INDEMNITY",
        {
            "en": _i(r"\b(indemnif(y|ies|ication)|hold harmless)\b"),
            # "freistellen", "stellt den Kunden von allen Ansprüchen frei", "schadlos halten"
            "de": _i(
                r"\b(frei(zu)?stell(en|t|ung)|schadlos\s+(zu\s+)?h(alten|ält))\b|"
                r"\bstell(t|en)\b[^.;]{0,60}?\bvon\b[^.;]{0,40}?\bfrei\b"
            ),
            "fr": _i(
                r"\b(indemniser|indemnisera|tenir\s+indemne|garanti(r|ra|t)\s+\w+\s+contre)\b"
            ),
        },
        RiskLevel.MEDIUM,
        0.8,
        "The clause creates an indemnity obligation.",
        "Limit the indemnity to third-party claims caused by the indemnifying party.",
    ),
    Rule(
        "auto-renewal",
        "TERM",
        {
            "en": _i(r"\b(automatically renew(s|ed)?|auto-?renew(al)?|renew(s)? automatically)\b"),
            # "verlängert sich automatisch", "verlängert sich jeweils stillschweigend um ein
            # Jahr", "automatische Verlängerung"
            "de": _i(
                r"\bverlängert\s+sich\b[^.;]{0,40}?\b(automatisch|stillschweigend)|"
                r"\b(automatische|stillschweigende)\s+Verlängerung\b"
            ),
            # "reconduction tacite", "reconduit tacitement", "renouvelé automatiquement"
            "fr": _i(
                r"\breconduction\s+(tacite|automatique)|\btacite\s+reconduction|"
                r"\b(reconduit|renouvelé)e?s?\s+(tacitement|automatiquement)|"
                r"\brenouvellement\s+automatique"
            ),
        },
        RiskLevel.MEDIUM,
        0.85,
        "The agreement renews automatically.",
        "Require written notice before renewal, or a right to cancel at renewal.",
    ),
    Rule(
        "unilateral-termination",
        "TERMINATION",
        {
            "en": _i(
                r"\b(terminate[^.]{0,40}\b(at any time|for convenience|sole discretion)|"
                r"sole (and absolute )?discretion)\b"
            ),
            "de": _i(
                r"\bjederzeit\b[^.;]{0,40}?\bohne\s+(Angabe\s+von\s+)?Gründen?\b|"
                r"\bnach\s+(freiem|eigenem|alleinigem)\s+Ermessen\b"
            ),
            "fr": _i(
                r"\bà\s+(sa|son)\s+(seule|entière|libre)\s+discrétion\b|"
                r"\brésilier\b[^.;]{0,40}?\b(à\s+tout\s+moment|sans\s+motif)"
            ),
        },
        RiskLevel.HIGH,
        0.8,
        "One party may act unilaterally (termination or discretion).",
        "Make termination mutual and require a notice period.",
    ),
    Rule(
        "vague-terms",
        "CLARITY",
        {
            "en": _i(
                r"\b(reasonable efforts|best efforts|as soon as (reasonably )?practicable|"
                r"from time to time|material(ly)? adverse|including but not limited to)\b"
            ),
            "de": _i(
                r"\b(angemessene[n]?\s+Anstrengungen|nach\s+besten\s+Kräften|"
                r"so\s+bald\s+wie\s+möglich|von\s+Zeit\s+zu\s+Zeit|"
                r"einschließlich,?\s+aber\s+nicht\s+beschränkt\s+auf)\b"
            ),
            "fr": _i(
                r"\b(efforts\s+raisonnables|meilleurs\s+efforts|dans\s+les\s+meilleurs\s+délais|"
                r"dès\s+que\s+(raisonnablement\s+)?possible|de\s+temps\s+(à|en)\s+autre|"
                r"notamment\s+mais\s+non\s+limitativement|y\s+compris\s+(mais\s+)?sans\s+s['’]y\s+limiter)"
            ),
        },
        RiskLevel.LOW,
        0.6,
        "The clause relies on vague or undefined terms.",
        "Define the term or replace it with a measurable obligation.",
    ),
)
# Findings that make a section's personal data a high risk (identity and money).
HIGH_RISK_PII = frozenset({"SSN", "CREDIT_CARD", "IBAN", "PASSPORT", "MRZ", "DE_TAX_ID", "FR_NIR"})

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
        match = rule.search(text)
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
                risk_level=RiskLevel.HIGH if HIGH_RISK_PII & set(pii_types) else RiskLevel.MEDIUM,
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
