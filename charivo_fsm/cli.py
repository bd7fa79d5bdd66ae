"""The ``charivo-fsm`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import diagrams
from .machines import MACHINES


def _diagrams(args: argparse.Namespace) -> int:
    formats = [args.format] if args.format else list(diagrams.FORMATS)
    out = Path(args.out)
    if args.check:
        stale = diagrams.check(out, formats)
        if stale:
            print(f"{out}: out of date: {', '.join(stale)} (run 'charivo-fsm diagrams')")
            return 1
        print(f"{out}: up to date")
        return 0
    for path in diagrams.write(out, formats):
        print(f"wrote {path}")
    if args.svg:
        for spec in MACHINES.values():
            svg = diagrams.render_svg(spec)
            if svg is None:
                print("Graphviz 'dot' is not installed: no SVG written")
                break
            path = out / f"{spec.name}.svg"
            path.write_bytes(svg)
            print(f"wrote {path}")
    return 0


def _demo(_args: argparse.Namespace) -> int:
    print(
        "charivo-fsm demo: not yet -- the demo needs the real WebSocket transport, "
        "which has not landed yet. Run 'make test' to exercise the engine."
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="charivo-fsm",
        description="Realtime session engine built from declared state machines.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the scripted end-to-end demo")
    demo.set_defaults(run=_demo)
    draw = commands.add_parser("diagrams", help="write one diagram per declared machine")
    draw.add_argument("--format", choices=sorted(diagrams.FORMATS), help="default: both")
    draw.add_argument("--out", default="diagrams", help="directory (default: diagrams)")
    draw.add_argument(
        "--check", action="store_true", help="exit 1 when DIR differs from what would be written"
    )
    draw.add_argument("--svg", action="store_true", help="also render SVG (needs Graphviz dot)")
    draw.set_defaults(run=_diagrams)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
