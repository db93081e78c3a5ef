"""``python -m demoapp [flags]``: run the demo app until its shutdown mode says it is done."""

from __future__ import annotations

import asyncio
import sys

from demoapp.config import parse_config
from demoapp.server import DemoApp


def main(argv: list[str] | None = None) -> int:
    config = parse_config(sys.argv[1:] if argv is None else argv)
    return asyncio.run(DemoApp(config).run())


if __name__ == "__main__":
    sys.exit(main())
