"""Object storage, text extraction, sectioning and PII scanning."""
