"""The ``charivo-fsm`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="charivo-fsm",
        description="Realtime session engine built from declared state machines.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run the scripted end-to-end demo")
    args = parser.parse_args(argv)
    if args.command == "demo":
        print(
            "charivo-fsm demo: not yet -- the demo needs the real WebSocket transport, "
            "which has not landed yet. Run 'make test' to exercise the engine."
        )
        return 0
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
