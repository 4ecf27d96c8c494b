"""Data governance: envelope encryption with per-organization data keys, GDPR export and
erasure, and the lake export. Below the GraphQL layer: imports models, ingest and config."""
