"""Registered operations: the safelist of GraphQL documents (stored by sha256, loaded from
.graphql files) and automatic persisted queries, resolved before a request executes."""
