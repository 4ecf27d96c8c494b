"""``python -m prism.cli``: the ``prism`` command."""

from prism.cli.commands import main

main()
