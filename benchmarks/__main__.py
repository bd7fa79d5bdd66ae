"""``python -m benchmarks``: run every workload, print the tables, write the results.

Options: ``--runs N`` (measured runs per workload a-f, default 5), ``--only a,b,...``,
``--baseline REV`` (default ``839d7a2``; ``none``: no baseline): the ``charivo_fsm``
of commit REV runs a-f too, its runs interleaved with the working tree's, each run in
a fresh process (see :mod:`benchmarks.baseline`); ``--quick`` (a tenth of every size,
2 s of real time for f, 2 runs, the baseline too; g at 50 sessions, one run of 4 s per
client; writes nothing; ``--quick --only g`` takes under a minute), ``--no-write``
(print only), ``--readme-from-json`` (measure nothing: redraw the tables of
docs/performance.md and README.md from ``benchmarks/results.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import baseline, settings, voice
from .bench import Bench, drop_baseline, machine, merge
from .report import (
    G_BEGIN,
    G_END,
    G_SECTION,
    R_BEGIN,
    R_END,
    R_SECTION,
    compact_block,
    readme_block,
    text_table,
    update_readme,
    voice_block,
    voice_text,
)
from .settings import BACKEND

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="abcdefg", help="workloads to run, e.g. 'a,d'")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--baseline",
        default=baseline.DEFAULT,
        metavar="REV",
        help="the commit whose charivo_fsm runs a-f next to the working tree's "
        f"(default {baseline.DEFAULT}, main when issue 12 was filed); 'none': no baseline",
    )
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--readme-from-json",
        action="store_true",
        help="measure nothing: rewrite the tables of docs/performance.md and README.md "
        "from benchmarks/results.json",
    )
    args = parser.parse_args(argv)
    if args.readme_from_json:
        return _readme_from_json()
    runs = 2 if args.quick and args.runs == 5 else args.runs
    bench = Bench(scale=10 if args.quick else 1, f_seconds=2.0 if args.quick else 10.0)
    only = [name for name in "abcdefg" if name in args.only]
    started = time.perf_counter()
    base_info: dict[str, str] | None = None
    with tempfile.TemporaryDirectory(prefix="charivo-baseline-") as tmp:
        packages = [("current", ROOT)]
        if args.baseline.lower() != "none" and set(only) - {"g"}:
            base_info = baseline.extract(args.baseline, Path(tmp))
            packages.append(("baseline", Path(tmp)))
            print(
                f"baseline: charivo_fsm of {base_info['rev']} ({base_info['date']}, "
                f"{base_info['subject'][:60]}), runs interleaved with the working tree's",
                flush=True,
            )
        for name in only:
            if name != "g":
                _workload(bench, name, runs, packages, started)
    g: dict[str, Any] | None = None
    if "g" in only:
        g = _voice(args.quick, started)
    seconds = time.perf_counter() - started
    rows = [row for row in bench.rows.values() if row.values]
    info = machine(runs, seconds)
    info["subprocess_runs"] = True
    info["baseline"] = base_info
    print()
    if rows:
        print(text_table(rows))
        print()
    if g is not None:
        print(voice_text(g))
        print()
    print(
        f"{info['arch']}, {info['cpus']} CPUs, {info['python']}, {BACKEND}; "
        f"{seconds:.0f} s; load average at the end {info['load_average']}"
    )
    failed = [row for row in rows if row.met is False]
    if args.quick or args.no_write or set(only) != set("abcdefg"):
        return 0
    assert g is not None
    RESULTS.write_text(
        json.dumps(
            {
                "machine": info,
                "sizes": bench.sizes,
                "rows": {r.key: r.as_json() for r in rows},
                "extra": bench.extra,
                "g": g,
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    _write_pages(rows, g, info)
    print(f"wrote {RESULTS.relative_to(ROOT)}, the tables of docs/performance.md and README.md")
    if failed:
        print("targets not met: " + ", ".join(f"{r.key} ({r.workload})" for r in failed))
    return 0


def _workload(
    bench: Bench,
    name: str,
    runs: int,
    packages: list[tuple[str, Path]],
    started: float,
) -> None:
    """``runs`` runs of workload ``name``, each package in turn (current, baseline,
    current, ...), each run in a fresh process (a warm-up, then the measured run)."""
    for index in range(runs):
        for label, package in list(packages):
            print(
                f"[{time.perf_counter() - started:6.1f}s] {name}: run {index + 1}/{runs} ({label})",
                flush=True,
            )
            try:
                found = baseline.run_once(package, name, bench.scale, bench.f_seconds)
            except baseline.RunFailed as error:
                if label == "current":
                    raise
                print(f"{name}: the baseline cannot run it, dropped: {error}", flush=True)
                drop_baseline(bench, name)
                packages = [entry for entry in packages if entry[0] != "baseline"]
                continue
            merge(bench, found, baseline=label == "baseline")


def _write_pages(rows: list[Any], g: dict[str, Any] | None, info: dict[str, Any]) -> None:
    page = ROOT / "docs" / "performance.md"
    update_readme(page, readme_block(rows, info))
    if g is not None:
        update_readme(page, voice_block(g, info), G_BEGIN, G_END, G_SECTION)
    update_readme(ROOT / "README.md", compact_block(rows, g, info), R_BEGIN, R_END, R_SECTION)


def _readme_from_json() -> int:
    data = json.loads(RESULTS.read_text(encoding="utf-8"))
    scale = data["sizes"]["managers"]
    bench = Bench(scale=settings.MANAGERS // scale, f_seconds=10.0)
    rows = []
    for key, saved in data["rows"].items():
        row = bench.rows[key]
        row.workload, row.measure = saved["workload"], saved["measure"]
        row.values = list(saved["runs"])
        row.cpu_values = list(saved.get("cpu_time_runs") or [])
        row.floor_values = list(saved.get("floor_runs") or [])
        row.ratios = list(saved.get("ratio_runs") or [])
        row.baseline_values = list(saved.get("baseline_runs") or [])
        row.baseline_cpu_values = list(saved.get("baseline_cpu_time_runs") or [])
        row.baseline_ratios = list(saved.get("baseline_ratio_runs") or [])
        rows.append(row)
    _write_pages(rows, data.get("g"), data["machine"])
    print(text_table(rows))
    if "g" in data:
        print(voice_text(data["g"]))
    return 0


def _voice(quick: bool, started: float) -> dict[str, Any]:
    """Workload g (see :mod:`benchmarks.voice`): quick, 50 sessions once (under a
    minute); otherwise 50, 100, 200, 500 and 1,000 sessions, 3 runs each, until a client
    falls behind."""
    kinds = voice.available_kinds()
    if len(kinds) < len(voice.KINDS):
        print(
            "g: websockets and openai-agents are not installed here (`make bench` installs "
            f"them into .venv-bench): only {', '.join(kinds)}",
            flush=True,
        )

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {text}", flush=True)

    return voice.voice_sessions(
        [50] if quick else [50, 100, 200, 500, 1000],
        1 if quick else 3,
        warmup=2.0 if quick else 3.0,
        seconds=4.0 if quick else 10.0,
        kinds=kinds,
        log=log,
    )


if __name__ == "__main__":
    sys.exit(main())
