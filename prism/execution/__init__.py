"""What runs a GraphQL request: its context and transaction, loaders, the checks before execution
(validation, input bounds, cost), limits and the response cache, the safelist, prefetch, and the
planner."""
