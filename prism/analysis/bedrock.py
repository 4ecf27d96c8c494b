"""AWS Bedrock Runtime through aioboto3 (the Converse API), asked for structured JSON that is
validated before anything is stored."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, Literal

import aioboto3
from botocore.config import Config as BotoConfig
from pydantic import BaseModel, Field, ValidationError

from prism.analysis import Item, Outcome
from prism.models.enums import RiskLevel

PROMPT = """You review one section of a business document for legal and compliance risk.
Answer with JSON only, no prose, in exactly this shape:
{{"riskLevel": "LOW|MEDIUM|HIGH", "confidence": 0.0-1.0,
 "items": [{{"category": "...", "description": "...", "suggestion": "...",
            "riskLevel": "LOW|MEDIUM|HIGH", "confidence": 0.0-1.0, "quote": "..."}}]}}
Categories (exactly one of): LIABILITY, INDEMNITY, TERM, TERMINATION, PRIVACY, CLARITY,
COMPLIANCE, OTHER.
Personal data found by a scanner in this section: {pii}.
Section title: {title}
Section text:
<<<
{text}
>>>"""

_JSON = re.compile(r"\{.*\}", re.DOTALL)


Category = Literal[
    "LIABILITY", "INDEMNITY", "TERM", "TERMINATION", "PRIVACY", "CLARITY", "COMPLIANCE", "OTHER"
]


class _ItemModel(BaseModel):
    # A closed list: the model's free text only goes where masking applies.
    category: Category
    description: str = Field(min_length=1, max_length=2000)
    suggestion: str | None = Field(default=None, max_length=2000)
    riskLevel: Literal["LOW", "MEDIUM", "HIGH"]
    confidence: float = Field(ge=0, le=1)
    quote: str | None = Field(default=None, max_length=1000)


class _AnswerModel(BaseModel):
    riskLevel: Literal["LOW", "MEDIUM", "HIGH"]
    confidence: float = Field(ge=0, le=1)
    items: list[_ItemModel] = Field(max_length=50)


class AnalyzerOutputError(Exception):
    """The model answered something that is not the JSON asked for."""


def parse_answer(text: str) -> _AnswerModel:
    match = _JSON.search(text)
    if match is None:
        raise AnalyzerOutputError("the model's answer holds no JSON object")
    try:
        return _AnswerModel.model_validate(json.loads(match.group()))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise AnalyzerOutputError(f"the model's JSON does not fit the schema: {exc}") from exc


class BedrockAnalyzer:
    name = "bedrock"

    def __init__(
        self,
        *,
        model_id: str,
        region: str,
        input_price_per_1k: float,
        output_price_per_1k: float,
        timeout_seconds: float = 60,
        max_attempts: int = 6,
        endpoint_url: str | None = None,
    ) -> None:
        self.model_id = model_id
        self.region = region
        self.endpoint_url = endpoint_url
        self.input_price = Decimal(str(input_price_per_1k)) / 1000
        self.output_price = Decimal(str(output_price_per_1k)) / 1000
        self._session = aioboto3.Session()
        # "adaptive" retries back off on ThrottlingException with client-side rate limiting.
        self._config = BotoConfig(
            read_timeout=timeout_seconds,
            connect_timeout=10,
            retries={"max_attempts": max_attempts, "mode": "adaptive"},
        )

    def client(self) -> Any:
        return self._session.client(
            "bedrock-runtime",
            region_name=self.region,
            config=self._config,
            endpoint_url=self.endpoint_url,
        )

    async def analyze(self, *, section_name: str, text: str, pii_types: list[str]) -> Outcome:
        prompt = PROMPT.format(
            pii=", ".join(sorted(set(pii_types))) or "none", title=section_name, text=text[:20_000]
        )
        async with self.client() as bedrock:
            response = await bedrock.converse(
                modelId=self.model_id,
                messages=[{"role": "user", "content": [{"text": prompt}]}],
                inferenceConfig={"maxTokens": 2048, "temperature": 0},
            )
        answer_text = "".join(
            part.get("text", "") for part in response["output"]["message"]["content"]
        )
        answer = parse_answer(answer_text)
        usage = response.get("usage", {})
        tokens_in = max(int(usage.get("inputTokens", 0)), 0)
        tokens_out = max(int(usage.get("outputTokens", 0)), 0)
        cost = (tokens_in * self.input_price + tokens_out * self.output_price).quantize(
            Decimal("0.000001")
        )
        return Outcome(
            model=self.model_id,
            model_version=response.get("ResponseMetadata", {})
            .get("HTTPHeaders", {})
            .get("x-amzn-bedrock-model-version")
            or "converse",
            items=[
                Item(
                    id=f"item-{n}",
                    category=i.category,
                    description=i.description,
                    suggestion=i.suggestion,
                    risk_level=RiskLevel(i.riskLevel),
                    confidence=i.confidence,
                    quote=i.quote,
                )
                for n, i in enumerate(answer.items)
            ],
            risk_level=RiskLevel(answer.riskLevel),
            confidence=answer.confidence,
            tokens_used=tokens_in + tokens_out,
            cost_usd=cost,
        )
