"""``python -m soak`` (``make soak``): the soak runs, then the fuzz tests at a large count.

Each soak run happens in a process of its own (so that each one's memory figures are
its own): the OpenAI-transport run (real sockets, real clock, mostly waiting) runs
alongside the two virtual-clock runs, which run one after the other.  Then
``tests/test_fuzz.py`` runs with the ``CHARIVO_FUZZ_PROFILE=soak`` Hypothesis profile.
The exit status is 0 only if every run passed.

``python -m soak --run asyncio|trio|openai`` performs one run in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import SoakConfig, format_report, run_openai, run_virtual

VIRTUAL = SoakConfig(sessions=150, duration=80.0, warmup=20.0)
"""The full virtual-clock run (per backend); seconds are virtual.  It always covers
its whole duration (no wall budget): sized to take about 15 s per backend on an
idle 2-core machine and about a minute on a loaded one."""

OPENAI = SoakConfig(
    sessions=50,
    duration=25.0,
    warmup=15.0,
    action_gap=0.25,
    event_gap=0.5,
    blocks_limit=None,  # reported; see docs/reliability.md
)
"""The full OpenAI-transport run; seconds are real."""


def _one(args: argparse.Namespace) -> int:
    base = OPENAI if args.run == "openai" else VIRTUAL
    cfg = replace(
        base,
        seed=args.seed,
        **{
            name: value
            for name, value in (
                ("sessions", args.sessions),
                ("duration", args.duration),
                ("warmup", args.warmup),
                ("wall_budget", args.wall_budget),
            )
            if value is not None
        },
    )
    if args.run == "openai":
        report = run_openai(args.backend or "asyncio", cfg)
    else:
        report = run_virtual(args.run, cfg)
    print(format_report(report), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report.figures()))
    return 0 if not report.failures() else 1


def _spawn(run: str, json_path: Path, args: argparse.Namespace) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "soak", "--run", run, "--json", str(json_path)]
    command += ["--seed", str(args.seed)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _summary(figures: dict[str, Any]) -> str:
    return (
        f"{figures['name']}: {figures['sessions']} sessions, {figures['covered']:g} s "
        f"(+ warm-up) in {figures['wall']:g} s wall; tool calls {figures['tool_calls_received']}"
        f" received = {figures['tool_outcomes']} outcomes; sessions "
        f"{figures['sessions_started']} started = {figures['sessions_ended']} ended; "
        f"{figures['tasks_alive']} tasks alive; memory RSS {figures['rss_growth']:+.1%}, "
        f"live allocations {figures['blocks_growth']:+.1%}; longest stop "
        f"{figures['max_stop']:.3f} s (bound {figures['stop_bound']:g} s); "
        f"leak check {figures['payloads_alive']} of {figures['payloads_sampled']} "
        f"first-half payloads alive ({figures['payload_kinds_checked']} kinds); "
        f"{figures['violations']} violations"
    )


def _all(args: argparse.Namespace) -> int:
    started = time.monotonic()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        paths = {run: Path(tmp) / f"{run}.json" for run in ("asyncio", "trio", "openai")}
        outputs: dict[str, str] = {}
        codes: dict[str, int] = {}
        openai = _spawn("openai", paths["openai"], args)
        for run in ("asyncio", "trio"):
            child = _spawn(run, paths[run], args)
            outputs[run], _ = child.communicate()
            codes[run] = child.returncode
        outputs["openai"], _ = openai.communicate()
        codes["openai"] = openai.returncode
        soak_wall = time.monotonic() - started
        figures: dict[str, dict[str, Any]] = {}
        for run in ("asyncio", "trio", "openai"):
            print(outputs[run].rstrip(), end="\n\n")
            if paths[run].exists():
                figures[run] = json.loads(paths[run].read_text())
            failed = failed or codes[run] != 0
    print("== summary ==")
    for run in ("asyncio", "trio", "openai"):
        if run in figures:
            print(_summary(figures[run]))
        else:
            print(f"{run}: no report (exit status {codes[run]})")
    print(f"soak runs: {soak_wall:.1f} s wall (the verdict does not depend on it)")
    if not args.no_fuzz:
        fuzz_started = time.monotonic()
        env = dict(os.environ, CHARIVO_FUZZ_PROFILE="soak")
        code = subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_fuzz.py"],
            env=env,
        )
        print(f"fuzz tests (soak profile): {time.monotonic() - fuzz_started:.1f} s, exit {code}")
        failed = failed or code != 0
    print("SOAK:", "FAIL" if failed else "PASS")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__)
    parser.add_argument("--run", choices=("asyncio", "trio", "openai"), help="one run only")
    parser.add_argument("--backend", choices=("asyncio", "trio"), help="for --run openai")
    parser.add_argument("--sessions", type=int)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--warmup", type=float)
    parser.add_argument("--wall-budget", type=float)
    parser.add_argument("--seed", type=int, default=VIRTUAL.seed)
    parser.add_argument("--json", help="write the run's figures here (with --run)")
    parser.add_argument("--no-fuzz", action="store_true", help="skip the fuzz tests")
    args = parser.parse_args(argv)
    return _one(args) if args.run else _all(args)


if __name__ == "__main__":
    sys.exit(main())
