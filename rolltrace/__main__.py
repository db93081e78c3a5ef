"""``python -m rolltrace``: the same as the ``rolltrace`` console script."""

from rolltrace.cli import main

main()
