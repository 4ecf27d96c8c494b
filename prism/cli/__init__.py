"""The ``prism`` command, one module per area of commands (``main`` assembles them)."""
