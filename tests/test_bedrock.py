"""The Bedrock analyzer: everything real (aioboto3, botocore signing, retries, parsing) except
the HTTP response, which a botocore `before-send` hook supplies, since AWS is not reachable."""

from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest
from aiobotocore.awsrequest import AioAWSResponse

from prism.analysis.bedrock import AnalyzerOutputError, BedrockAnalyzer
from prism.models.enums import RiskLevel

ANSWER = {
    "riskLevel": "HIGH",
    "confidence": 0.82,
    "items": [
        {
            "category": "LIABILITY",
            "description": "Liability is unlimited.",
            "suggestion": "Cap it.",
            "riskLevel": "HIGH",
            "confidence": 0.9,
            "quote": "unlimited liability",
        },
    ],
}


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    async def read(self) -> bytes:
        return self._body


def _converse(text: str, status: int = 200) -> AioAWSResponse:
    body = (
        orjson.dumps(
            {
                "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 1200, "outputTokens": 300, "totalTokens": 1500},
                "metrics": {"latencyMs": 420},
            }
        )
        if status == 200
        else orjson.dumps({"message": "Too many requests"})
    )
    headers = {"content-type": "application/json", "x-amzn-requestid": "req-1"}
    if status == 429:
        headers["x-amzn-errortype"] = "ThrottlingException:http://internal.amazon.com/"
    return AioAWSResponse(
        "https://bedrock-runtime.us-east-1.amazonaws.com", status, headers, _Raw(body)
    )


@pytest.fixture(autouse=True)
def aws_credentials() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class StubbedBedrock(BedrockAnalyzer):
    """The real analyzer whose client answers from ``responses`` at the HTTP boundary."""

    def __init__(self, responses: list[AioAWSResponse]) -> None:
        super().__init__(
            model_id="anthropic.test-model",
            region="us-east-1",
            input_price_per_1k=0.001,
            output_price_per_1k=0.005,
            max_attempts=3,
        )
        self.responses = responses
        self.requests: list[Any] = []
        # Session events reach every client the analyzer creates.
        self._session.events.register("before-send.bedrock-runtime.Converse", self._answer)

    def _answer(self, request: Any, **_: Any) -> AioAWSResponse:
        self.requests.append(request)
        return self.responses.pop(0)


async def test_converse_answer_becomes_an_outcome_with_cost() -> None:
    analyzer = StubbedBedrock([_converse(orjson.dumps(ANSWER).decode())])
    outcome = await analyzer.analyze(
        section_name="4. Liability", text="unlimited liability", pii_types=["EMAIL"]
    )
    assert outcome.model == "anthropic.test-model"
    assert outcome.risk_level is RiskLevel.HIGH
    assert outcome.confidence == 0.82
    assert outcome.tokens_used == 1500
    assert outcome.cost_usd == Decimal("0.002700")  # 1.2 × 0.001 + 0.3 × 0.005
    assert [(i.category, i.risk_level) for i in outcome.items] == [("LIABILITY", RiskLevel.HIGH)]
    sent = orjson.loads(analyzer.requests[0].body)
    assert "EMAIL" in sent["messages"][0]["content"][0]["text"]
    assert analyzer.requests[0].headers["Authorization"].startswith(b"AWS4-HMAC-SHA256")


async def test_throttling_is_retried() -> None:
    analyzer = StubbedBedrock([_converse("", status=429), _converse(orjson.dumps(ANSWER).decode())])
    outcome = await analyzer.analyze(section_name="s", text="t", pii_types=[])
    assert outcome.risk_level is RiskLevel.HIGH
    assert len(analyzer.requests) == 2


@pytest.mark.parametrize(
    "answer",
    [
        "I cannot help with that.",
        '{"riskLevel": "EXTREME", "confidence": 0.5, "items": []}',
        '{"riskLevel": "LOW", "confidence": 7, "items": []}',
        '{"riskLevel": "LOW", "confidence": 0.5, "items": [{"category": ""}]}',
        '{"riskLevel": "LOW", "confidence": 0.5, "items": [{"category": "jane@example.com",'
        ' "description": "d", "riskLevel": "LOW", "confidence": 0.5}]}',
    ],
)
async def test_answers_outside_the_schema_are_refused(answer: str) -> None:
    analyzer = StubbedBedrock([_converse(answer)])
    with pytest.raises(AnalyzerOutputError):
        await analyzer.analyze(section_name="s", text="t", pii_types=[])


async def test_prose_around_the_json_is_tolerated() -> None:
    text = f"Here is my review:\n{orjson.dumps(ANSWER).decode()}\nThanks."
    outcome = await StubbedBedrock([_converse(text)]).analyze(
        section_name="s", text="t", pii_types=[]
    )
    assert len(outcome.items) == 1
