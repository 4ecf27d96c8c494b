"""Analyzers turn a section's text into feedback items, a risk level and a confidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

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
