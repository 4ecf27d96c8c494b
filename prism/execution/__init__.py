"""What runs a GraphQL request: its context and transaction, loaders, the checks before execution
(validation, input bounds, cost), limits and the response cache, the safelist, prefetch, the
planner, the schema extensions (the transaction's end, error mapping) and Relay global IDs."""
