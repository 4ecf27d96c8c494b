"""What runs a GraphQL request: its context and transaction, loaders, the checks before execution
(validation, input bounds, cost), limits and the response cache, the safelist, prefetch, the
planner, the schema extensions (the transaction's end, error mapping) and Relay global IDs."""

# Distinct documents each per-process cache keeps (parsed documents, their validation, their
# cost estimates, their plans), least recently used first out: a process's hot set of
# documents is far smaller (Apollo Router keeps 512 query plans in memory by default), and a
# flood of first-seen documents holds at most this many of each.
DOCUMENTS_KEPT = 512
