"""What jobs need to run: the database, the object store, search and the analyzers."""

from __future__ import annotations

from dataclasses import dataclass, field

from prism.config import AnalyzerName, Settings
from prism.errors import BadUserInput
from prism.governance.encryption import Envelope
from prism.ingest.extract import Limits
from prism.ingest.storage import ObjectStore, object_store
from prism.jobs.analyzers import Analyzer
from prism.jobs.analyzers.bedrock import BedrockAnalyzer
from prism.jobs.analyzers.rules import RulesAnalyzer
from prism.models.db import Database
from prism.search import Search, build_search


def build_analyzer(settings: Settings, name: AnalyzerName) -> Analyzer:
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


@dataclass
class Pipeline:
    settings: Settings
    db: Database
    store: ObjectStore
    search: Search
    # Seals RESTRICTED sections and export bundles with organizations' data keys.
    envelope: Envelope
    _analyzers: dict[AnalyzerName, Analyzer] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, db: Database, envelope: Envelope) -> Pipeline:
        return cls(
            settings=settings,
            db=db,
            store=object_store(settings),
            search=build_search(settings, db),
            envelope=envelope,
        )

    @property
    def limits(self) -> Limits:
        return Limits(
            timeout_seconds=self.settings.extract_timeout_seconds,
            memory_mb=self.settings.extract_memory_mb,
            max_pages=self.settings.max_pages,
        )

    def analyzer(self, name: str | None = None) -> Analyzer:
        try:
            key = AnalyzerName(name) if name else self.settings.analyzer
        except ValueError as exc:
            known = ", ".join(a.value for a in AnalyzerName)
            raise BadUserInput(
                f"Unknown analyzer {name!r}; known: {known}.", argument="analyzer"
            ) from exc
        if key not in self._analyzers:
            self._analyzers[key] = build_analyzer(self.settings, key)
        return self._analyzers[key]
