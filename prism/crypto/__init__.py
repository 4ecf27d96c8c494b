"""Keys and sealing: key-encryption keys, envelope encryption with per-organization data keys,
sealed streams, signed links."""
