"""Sections record whether their text came from OCR (a scanned PDF page or an image read by
Tesseract) and Tesseract's confidence in it (the mean of its word confidences, 0..1).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 07:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "document_sections",
        sa.Column("text_from_ocr", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("document_sections", sa.Column("ocr_confidence", sa.Float(), nullable=True))
    op.create_check_constraint(
        op.f("ck_document_sections_ocr_confidence"),
        "document_sections",
        "ocr_confidence IS NULL OR (text_from_ocr AND ocr_confidence BETWEEN 0 AND 1)",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("ck_document_sections_ocr_confidence"), "document_sections", type_="check"
    )
    op.drop_column("document_sections", "ocr_confidence")
    op.drop_column("document_sections", "text_from_ocr")
