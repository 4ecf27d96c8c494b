"""Data governance use cases: retention and lifecycle, legal hold, data quality, verified backups,
key rotation and the lake export."""
