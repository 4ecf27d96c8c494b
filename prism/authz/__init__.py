"""What the caller may do: principals and the one policy, ``decide(principal, action, resource)``."""
