"""Documents, their sections, AI analyses and reviewer feedback; the document fields of the
root Query and Mutation.

Long because: the document aggregate's types (documents, sections, analyses, feedback) and
its part of the root types belong together (decision 0022: one home for each thing)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import strawberry
from starlette.datastructures import UploadFile
from strawberry.file_uploads import Upload

from prism.authz.policy import sees_raw_pii
from prism.errors import BadUserInput, NotFound
from prism.execution.ids import expect_id, to_global_id
from prism.execution.loaders import now_or_later
from prism.extraction.pii import mask, mask_all
from prism.models import analyses as analysis_models
from prism.models import documents as document_models
from prism.models import feedback as feedback_models
from prism.models import users as user_models
from prism.models.pagination import Page, PageRequest
from prism.resolvers import documents as document_resolvers
from prism.schema.audit import Job
from prism.schema.base import After, Edge, First, Info, Node, PageInfo, edges_of
from prism.schema.enums import (
    Classification,
    DocumentOrderField,
    DocumentType,
    FeedbackAction,
    OrderDirection,
    ProcessingStatus,
    RiskLevel,
    StorageTier,
    WorkflowStatus,
)
from prism.schema.identity import User


@strawberry.type(description="PII found in a section: its type and offsets, never the text.")
class PiiFinding:
    type: str
    start: int
    end: int
    confidence: float


@strawberry.type(description="How many PII findings of one type a document has.")
class PiiCount:
    type: str
    count: int


@strawberry.type(description="An uploaded document.")
class Document(Node):
    filename: str
    mime_type: str
    file_size: int
    sha256: str
    document_type: DocumentType
    classification: Classification
    language_code: str | None
    word_count: int | None
    page_count: int | None
    processing_status: ProcessingStatus
    processing_error: str | None
    created_at: datetime
    updated_at: datetime
    legal_hold: bool
    retention_expires_at: datetime | None
    storage_tier: StorageTier | None
    total_sections: int
    total_feedback_items: int
    risk_level: RiskLevel | None
    confidence: float | None
    cost_usd: Decimal | None
    row: strawberry.Private[document_models.Document]

    @classmethod
    def from_row(cls, row: document_models.Document) -> Document:
        return cls(
            id=strawberry.ID(to_global_id("Document", row.id)),
            filename=row.filename,
            mime_type=row.mime_type,
            file_size=row.file_size,
            sha256=row.sha256,
            document_type=row.document_type,
            classification=row.classification,
            language_code=row.language_code,
            word_count=row.word_count,
            page_count=row.page_count,
            processing_status=row.processing_status,
            processing_error=row.processing_error,
            created_at=row.created_at,
            updated_at=row.updated_at,
            legal_hold=row.legal_hold,
            retention_expires_at=row.retention_expires_at,
            storage_tier=row.storage_tier,
            total_sections=row.total_sections,
            total_feedback_items=row.total_feedback_items,
            risk_level=row.risk_level,
            confidence=row.confidence,
            cost_usd=row.cost_usd,
            row=row,
        )

    @strawberry.field(description="Who uploaded the document.")
    def uploaded_by(self, info: Info) -> User | None:
        if self.row.uploaded_by is None:
            return None
        return now_or_later(info.context.loaders.user, self.row.uploaded_by, _user)

    @strawberry.field(description="The document's sections, in document order.")
    def sections(self, info: Info, first: First = None, after: After = None) -> SectionConnection:
        request = PageRequest.parse(first, after, ordering="sections")
        key = (self.row.id, request)
        return now_or_later(info.context.loaders.section_page, key, SectionConnection.from_page)

    @strawberry.field(description="AI analyses of the document's sections, oldest first.")
    def analyses(self, info: Info, first: First = None, after: After = None) -> AnalysisConnection:
        request = PageRequest.parse(first, after, ordering="analyses")
        key = (self.row.id, request)
        return now_or_later(info.context.loaders.analysis_page, key, AnalysisConnection.from_page)

    @strawberry.field(description="Reviewer feedback on the document, oldest first.")
    def feedback(self, info: Info, first: First = None, after: After = None) -> FeedbackConnection:
        request = PageRequest.parse(first, after, ordering="feedback")
        key = (self.row.id, request)
        return now_or_later(info.context.loaders.feedback_page, key, FeedbackConnection.from_page)

    @strawberry.field(description="PII findings of all sections, counted by type.")
    async def pii_summary(self, info: Info) -> list[PiiCount]:
        counts = await info.context.loaders.pii_summary.load(self.row.id)
        return [PiiCount(type=t, count=c) for t, c in counts]


@strawberry.type(description="A section of a document, as split at extraction.")
class Section(Node):
    order: int
    word_count: int
    text_from_ocr: bool = strawberry.field(
        description="True when the text was read by OCR from a scanned page or an image."
    )
    ocr_confidence: float | None = strawberry.field(
        description="Tesseract's confidence in OCR text (the mean over its words, 0 to 1); "
        "null when the text did not come from OCR."
    )
    row: strawberry.Private[document_models.Section]

    @classmethod
    def from_row(cls, row: document_models.Section) -> Section:
        return cls(
            id=strawberry.ID(to_global_id("Section", row.id)),
            order=row.ord,
            word_count=row.word_count,
            text_from_ocr=row.text_from_ocr,
            ocr_confidence=row.ocr_confidence,
            row=row,
        )

    def _masked(self, info: Info) -> bool:
        return bool(self.row.pii_findings) and not sees_raw_pii(info.context.require_principal())

    @strawberry.field(description="The section's heading (PII masked below CONFIDENTIAL).")
    def name(self, info: Info) -> str:
        info.context.note_content_read(self.row.document_id)
        if sees_raw_pii(info.context.require_principal()):
            return self.row.name
        return mask_all(self.row.name)

    @strawberry.field(
        description="Text as the viewer may see it: PII masked below CONFIDENTIAL clearance."
    )
    def content(self, info: Info) -> str:
        info.context.note_content_read(self.row.document_id)
        if self._masked(info):
            return mask(self.row.content, self.row.pii_findings)
        return self.row.content

    @strawberry.field(
        description="The section's language (ISO 639-1, e.g. `de`), detected at extraction; "
        "null when the text is too short or too mixed to tell."
    )
    def language_code(self) -> str | None:
        return self.row.language_code

    @strawberry.field(description="True when `content` has PII masked for this viewer.")
    def redacted(self, info: Info) -> bool:
        return self._masked(info)

    @strawberry.field(description="The PII found in this section (types and offsets only).")
    def pii_findings(self) -> list[PiiFinding]:
        return [
            PiiFinding(type=f["type"], start=f["start"], end=f["end"], confidence=f["confidence"])
            for f in self.row.pii_findings
        ]

    @strawberry.field(description="The document this section belongs to.")
    async def document(self, info: Info) -> Document:
        return await _document(info, self.row.document_id)

    @strawberry.field(description="AI analyses of this section.")
    def analyses(self, info: Info) -> list[Analysis]:
        return now_or_later(info.context.loaders.analyses_by_section, self.row.id, _analyses)


def _user(row: user_models.User | None) -> User | None:
    return User.from_row(row) if row else None


def _analyses(rows: list[analysis_models.Analysis]) -> list[Analysis]:
    return [Analysis.from_row(r) for r in rows]


async def _document(info: Info, document_id: Any) -> Document:
    row = await info.context.loaders.document.load(document_id)
    if row is None:  # a child row is only readable when its document is
        raise NotFound("Document not found.")
    return Document.from_row(row)


@strawberry.type(description="One finding of an AI analysis.")
class FeedbackItem:
    id: str
    category: str
    description: str
    suggestion: str | None
    risk_level: RiskLevel
    confidence: float
    quote: str | None

    @classmethod
    def from_json(cls, item: dict[str, Any], *, masked: bool) -> FeedbackItem:
        """``masked``: the viewer may not see PII, which a quote or description may hold."""
        shown = mask_all if masked else _same
        return cls(
            id=str(item["id"]),
            category=item["category"],
            description=shown(item["description"]),
            suggestion=_maybe(shown, item.get("suggestion")),
            risk_level=item["riskLevel"],
            confidence=float(item["confidence"]),
            quote=_maybe(shown, item.get("quote")),
        )


def _same(text: str) -> str:
    return text


def _maybe(show: Callable[[str], str], text: str | None) -> str | None:
    return None if text is None else show(text)


@strawberry.type(description="An AI analysis of one section.")
class Analysis(Node):
    model: str
    model_version: str | None
    started_at: datetime
    completed_at: datetime
    duration_seconds: float
    risk_level: RiskLevel | None
    confidence: float | None
    tokens_used: int
    cost_usd: Decimal
    row: strawberry.Private[analysis_models.Analysis]

    @classmethod
    def from_row(cls, row: analysis_models.Analysis) -> Analysis:
        return cls(
            id=strawberry.ID(to_global_id("Analysis", row.id)),
            model=row.model,
            model_version=row.model_version,
            started_at=row.started_at,
            completed_at=row.completed_at,
            duration_seconds=row.duration_seconds,
            risk_level=row.risk_level,
            confidence=row.confidence,
            tokens_used=row.tokens_used,
            cost_usd=row.cost_usd,
            row=row,
        )

    @strawberry.field(description="The analysed document.")
    async def document(self, info: Info) -> Document:
        return await _document(info, self.row.document_id)

    @strawberry.field(description="The analysed section.")
    async def section(self, info: Info) -> Section:
        row = await info.context.loaders.section.load(self.row.section_id)
        if row is None:
            raise NotFound("Section not found.")
        return Section.from_row(row)

    @strawberry.field(description="What the analysis found (PII masked below CONFIDENTIAL).")
    def feedback_items(self, info: Info) -> list[FeedbackItem]:
        info.context.note_content_read(self.row.document_id)
        masked = not sees_raw_pii(info.context.require_principal())
        return [FeedbackItem.from_json(item, masked=masked) for item in self.row.feedback_items]


@strawberry.type(description="A reviewer's response to an AI feedback item.")
class Feedback(Node):
    item_id: str | None
    action: FeedbackAction
    category: str | None
    rating: int | None
    custom_text: str | None
    highlighted_text: str | None
    workflow_status: WorkflowStatus
    approved_at: datetime | None
    created_at: datetime
    row: strawberry.Private[feedback_models.Feedback]

    @classmethod
    def from_row(cls, row: feedback_models.Feedback) -> Feedback:
        return cls(
            id=strawberry.ID(to_global_id("Feedback", row.id)),
            item_id=row.item_id,
            action=row.action,
            category=row.category,
            rating=row.rating,
            custom_text=row.custom_text,
            highlighted_text=row.highlighted_text,
            workflow_status=row.workflow_status,
            approved_at=row.approved_at,
            created_at=row.created_at,
            row=row,
        )

    @strawberry.field(description="The document the feedback is about.")
    async def document(self, info: Info) -> Document:
        return await _document(info, self.row.document_id)

    @strawberry.field(description="The section the feedback is about.")
    async def section(self, info: Info) -> Section | None:
        if self.row.section_id is None:
            return None
        row = await info.context.loaders.section.load(self.row.section_id)
        return Section.from_row(row) if row else None

    @strawberry.field(description="The analysis the feedback responds to.")
    async def analysis(self, info: Info) -> Analysis | None:
        if self.row.analysis_id is None:
            return None
        row = await info.context.loaders.analysis.load(self.row.analysis_id)
        return Analysis.from_row(row) if row else None

    @strawberry.field(description="Who wrote the feedback.")
    def author(self, info: Info) -> User | None:
        if self.row.user_id is None:
            return None
        return now_or_later(info.context.loaders.user, self.row.user_id, _user)

    @strawberry.field(description="Who approved or rejected the feedback.")
    async def approved_by(self, info: Info) -> User | None:
        if self.row.approved_by is None:
            return None
        row = await info.context.loaders.user.load(self.row.approved_by)
        return User.from_row(row) if row else None


@strawberry.type
class DocumentEdge(Edge):
    node: Document


@strawberry.type(description="A page of documents.")
class DocumentConnection:
    edges: list[DocumentEdge]
    page_info: PageInfo
    flt: strawberry.Private[document_models.DocumentFilter | None]

    @strawberry.field(description="How many documents match the filter (visible to the caller).")
    async def total_count(self, info: Info) -> int:
        async with info.context.transaction.read() as session:
            return await document_models.count_documents(session, info.context.scope, flt=self.flt)

    @classmethod
    def from_page(
        cls, page: Page[document_models.Document], flt: document_models.DocumentFilter | None
    ) -> DocumentConnection:
        return cls(
            edges=edges_of(page, Document.from_row, DocumentEdge),
            page_info=PageInfo.from_page(page),
            flt=flt,
        )


@strawberry.type
class SectionEdge(Edge):
    node: Section


@strawberry.type(description="A page of sections.")
class SectionConnection:
    edges: list[SectionEdge]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: Page[document_models.Section]) -> SectionConnection:
        return cls(
            edges=edges_of(page, Section.from_row, SectionEdge), page_info=PageInfo.from_page(page)
        )


@strawberry.type
class AnalysisEdge(Edge):
    node: Analysis


@strawberry.type(description="A page of analyses.")
class AnalysisConnection:
    edges: list[AnalysisEdge]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: Page[analysis_models.Analysis]) -> AnalysisConnection:
        return cls(
            edges=edges_of(page, Analysis.from_row, AnalysisEdge),
            page_info=PageInfo.from_page(page),
        )


@strawberry.type
class FeedbackEdge(Edge):
    node: Feedback


@strawberry.type(description="A page of feedback.")
class FeedbackConnection:
    edges: list[FeedbackEdge]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: Page[feedback_models.Feedback]) -> FeedbackConnection:
        return cls(
            edges=edges_of(page, Feedback.from_row, FeedbackEdge),
            page_info=PageInfo.from_page(page),
        )


@strawberry.input(description="Narrows a document list; all given conditions must hold.")
class DocumentFilter:
    processing_status: list[ProcessingStatus] | None = None
    classification: list[Classification] | None = None
    document_type: list[DocumentType] | None = None
    risk_level: list[RiskLevel] | None = None
    uploaded_by: strawberry.ID | None = strawberry.field(default=None, description="A User ID.")
    created_after: datetime | None = None
    created_before: datetime | None = None
    legal_hold: bool | None = None

    def to_model(self) -> document_models.DocumentFilter:
        return document_models.DocumentFilter(
            processing_status=self.processing_status,
            classification=self.classification,
            document_type=self.document_type,
            risk_level=self.risk_level,
            uploaded_by=expect_id(self.uploaded_by, "User") if self.uploaded_by else None,
            created_after=self.created_after,
            created_before=self.created_before,
            legal_hold=self.legal_hold,
        )


@strawberry.input(description="How to order a document list (ties broken by ID).")
class DocumentOrder:
    field: DocumentOrderField
    direction: OrderDirection


@strawberry.type
class DocumentQuery:
    """``documents`` and ``document`` of the root Query."""

    @strawberry.field(description="Documents the caller may see, filtered, ordered and paged.")
    async def documents(
        self,
        info: Info,
        filter: DocumentFilter | None = None,
        order_by: DocumentOrder | None = None,
        first: First = None,
        after: After = None,
    ) -> DocumentConnection:
        page, flt = await document_resolvers.read_documents(
            info.context,
            filter,
            field=order_by.field.value if order_by else "CREATED_AT",
            descending=order_by.direction is OrderDirection.DESC if order_by else True,
            first=first,
            after=after,
            selections=info.selected_fields[0].selections,
        )
        return DocumentConnection.from_page(page, flt)

    @strawberry.field(description="One document; NOT_FOUND if it does not exist or is not visible.")
    async def document(self, info: Info, id: strawberry.ID) -> Document | None:
        return Document.from_row(await document_resolvers.read_document(info.context, id))


@strawberry.input(description="A file (GraphQL multipart request) and how to file it.")
class UploadDocumentInput:
    file: Upload = strawberry.field(
        description="docx, pdf or plain text; the type is read from the bytes."
    )
    document_type: DocumentType | None = None
    classification: Classification | None = strawberry.field(
        default=None, description="Default INTERNAL; never above the uploader's clearance."
    )
    analyze: bool = strawberry.field(default=True, description="Analyse once extracted.")


@strawberry.type(description="An uploaded document and the job that processes it.")
class UploadDocumentPayload:
    document: Document
    deduplicated: bool = strawberry.field(
        description="True when the organization already had these bytes: that document is "
        "returned and nothing new is stored."
    )
    job: Job | None


@strawberry.input(description="Re-run the AI analysis of a document.")
class AnalyzeDocumentInput:
    document_id: strawberry.ID
    analyzer: str | None = strawberry.field(
        default=None, description="rules or bedrock; default: the server's PRISM_ANALYZER."
    )


@strawberry.type(description="A document queued for analysis.")
class AnalyzeDocumentPayload:
    document: Document
    job: Job


@strawberry.input(description="Changes to a document; omitted fields stay as they are.")
class UpdateDocumentInput:
    id: strawberry.ID
    document_type: DocumentType | None = None
    classification: Classification | None = None
    legal_hold: bool | None = strawberry.field(default=None, description="ADMIN only.")


@strawberry.type(description="What `deleteDocument` removed.")
class DeleteDocumentPayload:
    deleted_id: strawberry.ID


@strawberry.type
class DocumentMutation:
    """``uploadDocument`` ... ``deleteDocument`` of the root Mutation."""

    @strawberry.mutation(
        description="Upload a document (multipart); it is extracted and analysed by workers."
    )
    async def upload_document(
        self, info: Info, input: UploadDocumentInput
    ) -> UploadDocumentPayload:
        if not isinstance(input.file, UploadFile) or input.file.file.closed:
            raise BadUserInput(
                "`file` must be a file part of a multipart request, used once.", argument="file"
            )
        file = input.file
        try:
            received = await document_resolvers.upload_document(
                info.context,
                document_resolvers.UploadInput(
                    source=file.file,
                    filename=file.filename,
                    document_type=input.document_type,
                    classification=input.classification,
                    analyze=input.analyze,
                ),
            )
        finally:
            await file.close()  # the spooled copy goes as soon as the object is stored
        return UploadDocumentPayload(
            document=Document.from_row(received.document),
            deduplicated=received.deduplicated,
            job=Job.from_row(received.job) if received.job else None,
        )

    @strawberry.mutation(
        description="Queue a new analysis of a document; earlier ones stay as history."
    )
    async def analyze_document(
        self, info: Info, input: AnalyzeDocumentInput
    ) -> AnalyzeDocumentPayload:
        document, job = await document_resolvers.analyze_document(
            info.context, expect_id(input.document_id, "Document"), input.analyzer
        )
        return AnalyzeDocumentPayload(document=Document.from_row(document), job=Job.from_row(job))

    @strawberry.mutation(description="Change a document's type, classification or legal hold.")
    async def update_document(self, info: Info, input: UpdateDocumentInput) -> Document:
        row = await document_resolvers.update_document(
            info.context,
            expect_id(input.id, "Document"),
            document_resolvers.DocumentChanges(
                document_type=input.document_type,
                classification=input.classification,
                legal_hold=input.legal_hold,
            ),
        )
        return Document.from_row(row)

    @strawberry.mutation(
        description="Delete a document (owner or ADMIN); CONFLICT under legal hold."
    )
    async def delete_document(self, info: Info, id: strawberry.ID) -> DeleteDocumentPayload:
        await document_resolvers.delete_document(info.context, expect_id(id, "Document"))
        return DeleteDocumentPayload(deleted_id=id)
