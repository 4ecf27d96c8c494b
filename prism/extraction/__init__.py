"""What a file holds: type detection from its bytes, text extraction in bounded child processes,
sectioning and PII scanning."""
