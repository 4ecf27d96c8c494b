"""Thin resolvers: GraphQL arguments in, one use case (or read) called, rows out; the schema
maps rows to types."""
