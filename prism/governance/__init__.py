"""Data governance: retention and lifecycle, legal hold, data quality, verified backups,
envelope encryption with per-organization data keys, GDPR export and erasure, and the lake
export. Below the GraphQL layer: imports models, ingest and config."""
