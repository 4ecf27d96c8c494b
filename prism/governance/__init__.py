"""Data governance use cases: retention and lifecycle, legal hold, data quality, verified backups,
the lake export, and the cleanup job that removes what lives outside the database."""
