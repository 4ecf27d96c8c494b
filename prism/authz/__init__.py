"""What the caller may do: principals, and the one policy that decides,
``decide(principal, action, resource)``."""
