"""Identity: organizations, users, sign-in sessions and MFA enrolment (the use cases)."""
