"""Analyzers turn a section's text into feedback items, a risk level and a confidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from prism.config import AnalyzerName, Settings
from prism.errors import BadUserInput
from prism.models.enums import RiskLevel


@dataclass(frozen=True)
class Item:
    id: str
    category: str
    description: str
    risk_level: RiskLevel
    confidence: float
    suggestion: str | None = None
    quote: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category,
            "description": self.description,
            "suggestion": self.suggestion,
            "riskLevel": self.risk_level.value,
            "confidence": self.confidence,
            "quote": self.quote,
        }


@dataclass(frozen=True)
class Outcome:
    model: str
    model_version: str
    items: list[Item] = field(default_factory=list)
    risk_level: RiskLevel | None = None
    confidence: float | None = None
    tokens_used: int = 0
    cost_usd: Decimal = Decimal("0")


class Analyzer(Protocol):
    name: str

    async def analyze(self, *, section_name: str, text: str, pii_types: list[str]) -> Outcome: ...


class Analyzers:
    """The analyzers of a process, built on first use: the configured default, or one named
    by a request (``analyzeDocument(analyzer: ...)``)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._built: dict[AnalyzerName, Analyzer] = {}

    def get(self, name: str | None = None) -> Analyzer:
        try:
            key = AnalyzerName(name) if name else self._settings.analyzer
        except ValueError as exc:
            known = ", ".join(a.value for a in AnalyzerName)
            raise BadUserInput(
                f"Unknown analyzer {name!r}; known: {known}.", argument="analyzer"
            ) from exc
        if key not in self._built:
            self._built[key] = build_analyzer(self._settings, key)
        return self._built[key]


def build_analyzer(settings: Settings, name: AnalyzerName) -> Analyzer:
    # Imported here: each analyzer module imports this one (for Item and Outcome).
    from prism.analysis.bedrock import BedrockAnalyzer
    from prism.analysis.rules import RulesAnalyzer

    if name is AnalyzerName.BEDROCK:
        return BedrockAnalyzer(
            model_id=settings.bedrock_model_id,
            region=settings.bedrock_region,
            input_price_per_1k=settings.bedrock_input_price_per_1k,
            output_price_per_1k=settings.bedrock_output_price_per_1k,
            timeout_seconds=settings.bedrock_timeout_seconds,
            max_attempts=settings.bedrock_max_attempts,
        )
    return RulesAnalyzer()
