"""API tokens: issue, list, revoke (the use cases)."""
