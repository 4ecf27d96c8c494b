"""Data governance: retention and lifecycle, legal hold, data quality, verified backups."""
