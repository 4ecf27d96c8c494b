"""Field resolvers and per-request DataLoaders: GraphQL arguments in, calls on authz, models,
search and jobs out. They return rows; the schema maps rows to types."""
