"""``python -m rolltrace`` and the ``rolltrace`` console script.

``rolltrace version`` is answered here, before typer is imported: two version strings should not
cost building the command line. Everything else goes to ``rolltrace.cli``.
"""

import sys

from rolltrace import version_line


def main() -> None:
    if sys.argv[1:] == ["version"]:
        print(version_line())
        return
    from rolltrace.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
