"""The root Mutation: one ``input`` argument (or an ID) in, a payload type out."""

from __future__ import annotations

from datetime import datetime

import strawberry
from starlette.datastructures import UploadFile
from strawberry.file_uploads import Upload

from prism.errors import BadUserInput
from prism.execution.ids import expect_id
from prism.resolvers import documents as document_resolvers
from prism.resolvers import governance as governance_resolvers
from prism.resolvers import identity as identity_resolvers
from prism.resolvers import privacy as governance_data_resolvers
from prism.resolvers import tokens as token_resolvers
from prism.schema.audit import Job
from prism.schema.base import Info
from prism.schema.documents import Document, Feedback
from prism.schema.enums import Classification, DocumentType, FeedbackAction, Role
from prism.schema.governance import RetentionPolicy, UpdateRetentionPolicyInput
from prism.schema.identity import ApiToken, User
from prism.schema.privacy import DataExport, ErasureReceipt


@strawberry.type(description="A signed-in session.")
class AuthPayload:
    access_token: str = strawberry.field(description="Short-lived JWT for `Authorization: Bearer`.")
    refresh_token: str = strawberry.field(description="Single-use token for `refreshSession`.")
    expires_at: datetime = strawberry.field(description="When the access token expires.")
    user: User

    @classmethod
    def from_signed_in(cls, signed_in: identity_resolvers.SignedIn) -> AuthPayload:
        return cls(
            access_token=signed_in.access_token,
            refresh_token=signed_in.refresh_token,
            expires_at=signed_in.expires_at,
            user=User.from_row(signed_in.user),
        )


@strawberry.type(description="A new API token.")
class CreateApiTokenPayload:
    token: str = strawberry.field(description="Shown once, never stored in the clear.")
    api_token: ApiToken


@strawberry.type(description="An uploaded document and the job that processes it.")
class UploadDocumentPayload:
    document: Document
    deduplicated: bool = strawberry.field(
        description="True when the organization already had these bytes: that document is "
        "returned and nothing new is stored."
    )
    job: Job | None


@strawberry.type(description="A document queued for analysis.")
class AnalyzeDocumentPayload:
    document: Document
    job: Job


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


@strawberry.input(description="Re-run the AI analysis of a document.")
class AnalyzeDocumentInput:
    document_id: strawberry.ID
    analyzer: str | None = strawberry.field(
        default=None, description="rules or bedrock; default: the server's PRISM_ANALYZER."
    )


@strawberry.type(description="What `deleteDocument` removed.")
class DeleteDocumentPayload:
    deleted_id: strawberry.ID


@strawberry.input(description="E-mail and password (and a TOTP code when MFA is on).")
class LoginInput:
    email: str
    password: str
    totp: str | None = None


@strawberry.type(description="A new authenticator to confirm with `confirmMfaEnrollment`.")
class MfaEnrollment:
    secret: str = strawberry.field(description="Base32 TOTP secret, for manual entry.")
    otpauth_uri: str = strawberry.field(description="otpauth:// URI, to show as a QR code.")


@strawberry.type(description="One-time backup codes: shown once, each works once.")
class MfaBackupCodes:
    backup_codes: list[str]
    user: User


@strawberry.input(description="A code from the authenticator app, or a backup code.")
class MfaCodeInput:
    code: str


@strawberry.input(description="A new API token, bound to the caller.")
class CreateApiTokenInput:
    name: str
    scopes: list[str] = strawberry.field(description="Subset of the caller's scopes.")
    expires_at: datetime | None = None


@strawberry.input(description="A new user of the caller's organization.")
class CreateUserInput:
    email: str
    password: str = strawberry.field(description="12 to 1024 characters.")
    first_name: str | None = None
    last_name: str | None = None
    role: Role
    department: str | None = None
    clearance: Classification | None = None
    access_expires_at: datetime | None = None


@strawberry.input(description="Changes to a user; omitted fields stay as they are.")
class UpdateUserInput:
    id: strawberry.ID
    role: Role | None = None
    department: str | None = None
    clearance: Classification | None = None
    access_expires_at: datetime | None = None


@strawberry.input(description="Changes to a document; omitted fields stay as they are.")
class UpdateDocumentInput:
    id: strawberry.ID
    document_type: DocumentType | None = None
    classification: Classification | None = None
    legal_hold: bool | None = strawberry.field(default=None, description="ADMIN only.")


@strawberry.input(description="A reviewer's response to an analysis or one of its items.")
class SubmitFeedbackInput:
    analysis_id: strawberry.ID
    item_id: str | None = None
    action: FeedbackAction
    custom_text: str | None = None
    rating: int | None = strawberry.field(default=None, description="1 to 5.")
    highlighted_text: str | None = None


@strawberry.input(
    description="Approve or reject submitted feedback (APPROVER, ADMIN; not its author)."
)
class ReviewFeedbackInput:
    id: strawberry.ID
    approve: bool


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Sign in with e-mail and password.")
    async def login(self, info: Info, input: LoginInput) -> AuthPayload:
        signed_in = await identity_resolvers.login(
            info.context, input.email, input.password, input.totp
        )
        return AuthPayload.from_signed_in(signed_in)

    @strawberry.mutation(
        description="Trade a refresh token for a new session (the old token stops working)."
    )
    async def refresh_session(self, info: Info, refresh_token: str) -> AuthPayload:
        signed_in = await identity_resolvers.refresh_session(info.context, refresh_token)
        return AuthPayload.from_signed_in(signed_in)

    @strawberry.mutation(
        description="End the session of a refresh token; false if it was not active."
    )
    async def logout(self, info: Info, refresh_token: str) -> bool:
        return await identity_resolvers.logout(info.context, refresh_token)

    @strawberry.mutation(
        description="Start MFA enrolment: a new TOTP secret for the caller's authenticator "
        "app (signed-in session only)."
    )
    async def begin_mfa_enrollment(self, info: Info) -> MfaEnrollment:
        secret, uri = await identity_resolvers.begin_mfa_enrollment(info.context)
        return MfaEnrollment(secret=secret, otpauth_uri=uri)

    @strawberry.mutation(
        description="Turn MFA on with a code from the new authenticator; returns backup codes."
    )
    async def confirm_mfa_enrollment(self, info: Info, input: MfaCodeInput) -> MfaBackupCodes:
        codes, row = await identity_resolvers.confirm_mfa_enrollment(info.context, input.code)
        return MfaBackupCodes(backup_codes=codes, user=User.from_row(row))

    @strawberry.mutation(
        description="Replace the caller's backup codes (the old ones stop working)."
    )
    async def regenerate_mfa_backup_codes(self, info: Info, input: MfaCodeInput) -> MfaBackupCodes:
        codes, row = await identity_resolvers.regenerate_mfa_backup_codes(info.context, input.code)
        return MfaBackupCodes(backup_codes=codes, user=User.from_row(row))

    @strawberry.mutation(description="Turn the caller's MFA off, with a current or backup code.")
    async def disable_mfa(self, info: Info, input: MfaCodeInput) -> User:
        return User.from_row(await identity_resolvers.disable_mfa(info.context, input.code))

    @strawberry.mutation(
        description="Turn off another user's MFA when their authenticator and backup codes "
        "are lost (ADMIN, signed-in session only)."
    )
    async def reset_user_mfa(self, info: Info, user_id: strawberry.ID) -> User:
        row = await identity_resolvers.reset_user_mfa(info.context, user_id)
        return User.from_row(row)

    @strawberry.mutation(
        description="Create an API token for the caller; the secret is in the answer only."
    )
    async def create_api_token(
        self, info: Info, input: CreateApiTokenInput
    ) -> CreateApiTokenPayload:
        secret, row = await token_resolvers.create_api_token(
            info.context, input.name, input.scopes, input.expires_at
        )
        return CreateApiTokenPayload(token=secret, api_token=ApiToken.from_row(row))

    @strawberry.mutation(description="Revoke an API token: it stops working on the next request.")
    async def revoke_api_token(self, info: Info, id: strawberry.ID) -> ApiToken:
        row = await token_resolvers.revoke_api_token(info.context, id)
        return ApiToken.from_row(row)

    @strawberry.mutation(description="Create a user in the caller's organization (ADMIN).")
    async def create_user(self, info: Info, input: CreateUserInput) -> User:
        row = await identity_resolvers.create_user(
            info.context,
            identity_resolvers.NewUser(
                email=input.email,
                password=input.password,
                role=input.role,
                clearance=input.clearance,
                first_name=input.first_name,
                last_name=input.last_name,
                department=input.department,
                access_expires_at=input.access_expires_at,
            ),
        )
        return User.from_row(row)

    @strawberry.mutation(
        description="Change a user's role, department, clearance or access expiry (ADMIN)."
    )
    async def update_user(self, info: Info, input: UpdateUserInput) -> User:
        changes = {
            name: value
            for name, value in (
                ("role", input.role),
                ("department", input.department),
                ("clearance", input.clearance),
                ("access_expires_at", input.access_expires_at),
            )
            if value is not None
        }
        row = await identity_resolvers.update_user(info.context, input.id, changes)
        return User.from_row(row)

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

    @strawberry.mutation(
        description="Export a person's data (GDPR access): a job builds an encrypted bundle "
        "with an expiring download link. The person themself or an ADMIN."
    )
    async def export_user_data(self, info: Info, user_id: strawberry.ID) -> DataExport:
        row = await governance_data_resolvers.export_user_data(
            info.context, expect_id(user_id, "User")
        )
        return DataExport.from_row(row)

    @strawberry.mutation(
        description="Erase a person (GDPR): identity pseudonymized, documents deleted unless "
        "under legal hold, sessions and tokens revoked; the receipt is an audit event (ADMIN, "
        "signed-in session only; cannot be undone)."
    )
    async def erase_user(self, info: Info, user_id: strawberry.ID) -> ErasureReceipt:
        erasure = await governance_data_resolvers.erase_user(
            info.context, expect_id(user_id, "User")
        )
        return ErasureReceipt.from_erasure(erasure)

    @strawberry.mutation(description="Accept, reject or rewrite AI feedback (REVIEWER and up).")
    async def submit_feedback(self, info: Info, input: SubmitFeedbackInput) -> Feedback:
        row = await document_resolvers.submit_feedback(
            info.context,
            document_resolvers.FeedbackInput(
                analysis_id=expect_id(input.analysis_id, "Analysis"),
                action=input.action,
                item_id=input.item_id,
                custom_text=input.custom_text,
                rating=input.rating,
                highlighted_text=input.highlighted_text,
            ),
        )
        return Feedback.from_row(row)

    @strawberry.mutation(description="Approve or reject submitted feedback.")
    async def review_feedback(self, info: Info, input: ReviewFeedbackInput) -> Feedback:
        row = await document_resolvers.review_feedback(
            info.context, expect_id(input.id, "Feedback"), approve=input.approve
        )
        return Feedback.from_row(row)

    @strawberry.mutation(
        description="Change one category's retention policy (ADMIN); a documents policy also "
        "moves its documents' retentionExpiresAt."
    )
    async def update_retention_policy(
        self, info: Info, input: UpdateRetentionPolicyInput
    ) -> RetentionPolicy:
        row = await governance_resolvers.update_retention_policy(
            info.context, input.category, input.changes()
        )
        return RetentionPolicy.from_row(row)
