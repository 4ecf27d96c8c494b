"""Who the caller is (principals, passwords, tokens, JWT) and what they may do (policy)."""
