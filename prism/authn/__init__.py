"""Who the caller is: passwords (argon2id), opaque tokens and JWTs, bearer authentication, MFA
codes (TOTP, backup codes), sign-in throttling."""
