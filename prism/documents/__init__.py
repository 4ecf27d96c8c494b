"""The document use cases: intake (an upload received), processing (extraction, PII, analysis),
editing, review of feedback, sealed originals and audited reads."""
