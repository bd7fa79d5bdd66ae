"""The ``charivo-fsm`` command: ``demo``, ``diagrams``, ``check``, ``web`` and ``serve``.

Each subcommand lives in its own module; this file only parses arguments.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

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


def _load(module: str, name: str) -> Callable[..., int] | None:
    try:
        return cast("Callable[..., int]", getattr(importlib.import_module(module), name))
    except ImportError:
        return None


def _demo(args: argparse.Namespace) -> int:
    run_demo = _load("charivo_fsm.demo", "run_demo")
    if run_demo is None:
        print(
            "charivo-fsm demo: not yet -- the scripted demo has not landed yet. "
            "Run 'make test' to exercise the engine."
        )
        return 0
    return run_demo(live=args.live, out_dir=args.out)


def _check(args: argparse.Namespace) -> int:
    run_check = _load("charivo_fsm.testing.check", "run_check")
    if run_check is None:
        print("charivo-fsm check: not yet -- the semantic suite has not landed yet.")
        return 2
    return run_check(examples=args.examples, seed=args.seed, transport=args.transport)


def _web(args: argparse.Namespace) -> int:
    try:
        from .web.run import run_web
    except ModuleNotFoundError as error:
        if error.name not in ("starlette", "uvicorn"):
            raise
        print(
            "charivo-fsm web needs Starlette and uvicorn: pip install 'charivo-fsm[web]'",
            file=sys.stderr,
        )
        return 2
    return run_web(host=args.host, port=args.port)


def _serve(args: argparse.Namespace) -> int:
    from .serve import run_serve

    return run_serve(
        host=args.host,
        port=args.port,
        api_key=None if args.any_key else args.api_key,
        audio=not args.text,
        audio_pace=args.audio_pace,
        delta_delay=args.delta_delay,
        drop_every=args.drop_every,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="charivo-fsm",
        description="Realtime session engine built from declared state machines.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the scripted end-to-end demo")
    demo.add_argument(
        "--live",
        action="store_true",
        help="talk to the real OpenAI Realtime API (needs OPENAI_API_KEY)",
    )
    demo.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="where to write the model's voice (WAV); default: a new temporary directory",
    )
    demo.set_defaults(run=_demo)

    draw = commands.add_parser("diagrams", help="write one diagram per declared machine")
    draw.add_argument("--format", choices=sorted(diagrams.FORMATS), help="default: both")
    draw.add_argument("--out", default="diagrams", help="directory (default: diagrams)")
    draw.add_argument(
        "--check", action="store_true", help="exit 1 when DIR differs from what would be written"
    )
    draw.add_argument("--svg", action="store_true", help="also render SVG (needs Graphviz dot)")
    draw.set_defaults(run=_diagrams)

    check = commands.add_parser(
        "check", help="run the Hypothesis semantic suite against the engine"
    )
    check.add_argument("--examples", type=int, default=200, help="examples per backend")
    check.add_argument("--seed", type=int, default=None, help="Hypothesis seed")
    check.add_argument(
        "--transport",
        default=None,
        metavar="MODULE:FACTORY",
        help="a factory returning (transport, faults); default: the built-in FakeTransport",
    )
    check.set_defaults(run=_check)

    web = commands.add_parser(
        "web",
        help="serve the browser voice page (OpenAI with OPENAI_API_KEY, else the local server)",
    )
    web.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    web.add_argument("--port", type=int, default=8765, help="default: 8765")
    web.set_defaults(run=_web)

    serve = commands.add_parser(
        "serve",
        help="run the local realtime server (WebSocket + client-secret endpoint) as a process",
    )
    serve.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="default: 0 (a free port, printed)")
    serve.add_argument(
        "--api-key", default="sk-local-test-key", help="the long-lived key clients must send"
    )
    serve.add_argument("--any-key", action="store_true", help="accept any key")
    serve.add_argument(
        "--text", action="store_true", help="sessions answer in text (default: audio)"
    )
    serve.add_argument(
        "--audio-pace",
        type=float,
        default=None,
        metavar="X",
        help="stream audio at X times real time (default: as fast as possible)",
    )
    serve.add_argument(
        "--delta-delay", type=float, default=0.0, metavar="S", help="seconds before each word"
    )
    serve.add_argument(
        "--drop-every",
        type=float,
        default=None,
        metavar="S",
        help="drop every open connection each S seconds (to test reconnects)",
    )
    serve.set_defaults(run=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
