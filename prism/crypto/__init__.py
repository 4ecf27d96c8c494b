"""Keys and sealing: key-encryption keys and their rotation, envelope encryption with
per-organization data keys, sealed streams, signed links."""
