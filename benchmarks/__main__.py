"""``python -m benchmarks``: run every workload, print one table, write the results.

Options: ``--runs N`` (measured runs per workload a-f, default 5), ``--only a,b,...``,
``--quick`` (a tenth of every size, 2 s of real time for f, 2 runs; g at 50 sessions,
one run of 4 s per client; writes nothing; ``--quick --only g`` takes under a minute),
``--no-write`` (print only), ``--readme-from-json`` (measure nothing: redraw the
table of docs/performance.md from ``benchmarks/results.json``).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import events, managers, refresh, sessions, tools, voice
from .common import BACKEND, fresh_heap, run
from .report import (
    G_BEGIN,
    G_END,
    G_SECTION,
    Row,
    readme_block,
    text_table,
    update_readme,
    voice_block,
    voice_text,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results.json"


def _at_most(limit: float) -> Callable[[float], bool]:
    return lambda value: value <= limit


def _at_least(limit: float) -> Callable[[float], bool]:
    return lambda value: value >= limit


class Bench:
    def __init__(self, scale: int, f_seconds: float) -> None:
        self.scale = scale
        self.f_seconds = f_seconds
        n_events = events.EVENTS // scale
        n_calls = tools.CALLS // scale
        n_managers = managers.MANAGERS // scale
        n_updates = refresh.UPDATES // scale
        n_deltas = events.DELTAS // scale
        n_sessions = sessions.SESSIONS // scale
        self.sizes = {
            "events": n_events,
            "calls": n_calls,
            "managers": n_managers,
            "updates": n_updates,
            "deltas": n_deltas,
            "sessions": n_sessions,
        }
        self.pairs: list[tuple[str, Any]] | None = None
        self.extra: dict[str, list[float]] = {}
        self.rows: dict[str, Row] = {}
        k = f"{n_events:,}"
        self._row(
            "a1", f"a. {k} events, one burst", "cost", "µs/event", "2.0", "≤ 2.0", _at_most(2.0), 3
        )
        self._row(
            "a2",
            f"a. {k} events, loop run every 1,000",
            "cost",
            "µs/event",
            "0.79",
            "≤ 2.0",
            _at_most(2.0),
            3,
        )
        c = f"{n_calls:,}"
        self._row(
            "b1",
            f"b. {c} tool calls, all in flight",
            "throughput",
            "calls/s",
            "25,000",
            "≥ 25,000",
            _at_least(25_000),
            0,
        )
        self._row(
            "b2",
            f"b. {c} tool calls, one at a time",
            "throughput",
            "calls/s",
            "99,000",
            "≥ 25,000",
            _at_least(25_000),
            0,
        )
        m = f"{n_managers:,}"
        self._row(
            "c1",
            f"c. {m} managers with 3 tools",
            "time per manager",
            "µs",
            "16",
            "≤ 20",
            _at_most(20.0),
            1,
        )
        self._row(
            "c2",
            f"c. {m} managers with 3 tools",
            "heap per manager",
            "KB",
            "2.1",
            "≤ 4",
            _at_most(4.0),
            2,
        )
        self._row(
            "c3",
            f"c. {m} managers, each with its own FakeTransport",
            "time per manager + transport",
            "µs",
            "16",
            "(info)",
            None,
            1,
        )
        self._row(
            "c4",
            f"c. {m} managers, each with its own FakeTransport",
            "heap per FakeTransport",
            "KB",
            "—",
            "(info)",
            None,
            2,
        )
        u = f"{n_updates:,}"
        row = self._row(
            "d1",
            f"d. {u} concurrent update_session, one patch in flight",
            "total",
            "ms",
            "75 (100,000 requests)",
            "≤ 1.5× floor",
            None,
            1,
        )
        row.ratio_target = 1.5
        self._row(
            "d2",
            f"d. {u} concurrent update_session, one patch in flight",
            "transport patches",
            "count",
            "2",
            "≤ 2",
            _at_most(2),
            0,
        )
        self._row(
            "d3",
            f"d. {u} concurrent update_session, one patch in flight",
            "latest config committed",
            "1 = yes",
            "yes",
            "1",
            _at_least(1),
            0,
        )
        d = f"{n_deltas:,}"
        self._row(
            "e1",
            f"e. one response of {d} deltas",
            "last 10% / first 10%",
            "cost ratio",
            "—",
            "≤ 1.5",
            _at_most(1.5),
            2,
        )
        self._row(
            "e2", f"e. one response of {d} deltas", "first 10%", "µs/delta", "—", "(info)", None, 3
        )
        s = f"{n_sessions:,}"
        f_label = f"f. {s} sessions × 50 events/s, {f_seconds:g} s"
        self._row("f1", f_label, "latency callback→emitter p50", "µs", "—", "(info)", None, 1)
        self._row(
            "f2", f_label, "latency callback→emitter p99", "µs", "—", "≤ 1,000", _at_most(1000.0), 1
        )
        self._row("f3", f_label, "feeding-task lag p99 (loop load)", "µs", "—", "(info)", None, 0)
        self._row(
            "f4",
            f"f. {s} entered sessions",
            "heap per entered session",
            "KB",
            "—",
            "≤ 20",
            _at_most(20.0),
            2,
        )

    def _row(
        self,
        key: str,
        workload: str,
        measure: str,
        unit: str,
        original: str,
        target: str,
        check: Callable[[float], bool] | None,
        digits: int = 2,
    ) -> Row:
        row = Row(key, workload, measure, unit, original, target, check, digits)
        self.rows[key] = row
        return row

    def add(
        self,
        record: bool,
        key: str,
        value: float,
        floor: float | None = None,
        ratio: float | None = None,
        cpu: float | None = None,
    ) -> None:
        if not record:
            return
        row = self.rows[key]
        row.values.append(value)
        if cpu is not None:
            row.cpu_values.append(cpu)
        if floor is not None:
            row.floor_values.append(floor)
        if ratio is not None:
            row.ratios.append(ratio)

    # ------------------------------------------------------------------ workloads

    def a(self, record: bool) -> None:
        count = self.sizes["events"]
        if self.pairs is None:
            self.pairs = run(events.emit_pairs_of_one_cycle)
        burst = run(functools.partial(events.events_workload, count, 0))
        drained = run(functools.partial(events.events_workload, count, events.DRAIN_EVERY))
        floor_wall, _floor_cpu = events.emit_floor(int(burst["emits"]), self.pairs)
        floor = floor_wall / count * 1e6
        for key, result in (("a1", burst), ("a2", drained)):
            self.add(
                record,
                key,
                result["us_per_event"],
                floor,
                result["us_per_event"] / floor,
                result["cpu_us_per_event"],
            )

    def b(self, record: bool) -> None:
        count = self.sizes["calls"]
        for key, at_once in (("b1", True), ("b2", False)):
            result = run(functools.partial(tools.tool_calls, count, at_once=at_once))
            floor_s, _floor_cpu = run(functools.partial(tools.bare_tasks, count, at_once=at_once))
            self.add(
                record,
                key,
                result["calls_per_s"],
                count / floor_s,
                result["seconds"] / floor_s,
                count / result["cpu_seconds"],
            )

    def c(self, record: bool) -> None:
        count = self.sizes["managers"]
        times = managers.create_managers(count)
        memory = managers.manager_memory(count)
        self.add(record, "c1", times["us_manager"], cpu=times["cpu_us_manager"])
        self.add(record, "c2", memory["bytes_manager"] / 1024)
        self.add(record, "c3", times["us_with_transport"], cpu=times["cpu_us_with_transport"])
        self.add(record, "c4", memory["bytes_transport"] / 1024)

    def d(self, record: bool) -> None:
        count = self.sizes["updates"]
        result = run(functools.partial(refresh.concurrent_updates, count))
        floor_s, _floor_cpu = run(functools.partial(refresh.bare_waiters, count))
        self.add(
            record,
            "d1",
            result["seconds"] * 1e3,
            floor_s * 1e3,
            result["seconds"] / floor_s,
            result["cpu_seconds"] * 1e3,
        )
        self.add(record, "d2", float(result["patches"]))
        self.add(record, "d3", 1.0 if result["latest_committed"] else 0.0)

    def e(self, record: bool) -> None:
        result = run(functools.partial(events.long_response, self.sizes["deltas"]))
        self.add(record, "e1", result["ratio"], cpu=result["cpu_ratio"])
        self.add(record, "e2", result["first_us"], cpu=result["first_cpu_us"])

    def f(self, record: bool) -> None:
        seconds = self.f_seconds if record else min(2.0, self.f_seconds)
        result = run(
            functools.partial(sessions.concurrent_sessions, self.sizes["sessions"], 50.0, seconds)
        )
        memory = run(functools.partial(sessions.session_memory, self.sizes["sessions"]))
        self.add(record, "f1", result["p50_us"])
        self.add(record, "f2", result["p99_us"])
        self.add(record, "f3", result["lag_p99_us"])
        if record:
            self.extra.setdefault("f_cpu_busy", []).append(result["cpu_busy"])
            self.extra.setdefault("f_engine_busy", []).append(result["engine_busy"])
        self.add(record, "f4", memory["bytes_session"] / 1024)


def machine(runs: int, seconds: float) -> dict[str, Any]:
    return {
        "date": datetime.date.today().isoformat(),
        "arch": platform.machine(),
        "cpus": os.cpu_count(),
        "python": f"CPython {platform.python_version()}"
        if platform.python_implementation() == "CPython"
        else f"{platform.python_implementation()} {platform.python_version()}",
        "backend": BACKEND,
        "runs": runs,
        "seconds": seconds,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="abcdefg", help="workloads to run, e.g. 'a,d'")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--readme-from-json",
        action="store_true",
        help="measure nothing: rewrite docs/performance.md's table from benchmarks/results.json",
    )
    args = parser.parse_args(argv)
    if args.readme_from_json:
        return _readme_from_json()
    runs = 2 if args.quick and args.runs == 5 else args.runs
    bench = Bench(scale=10 if args.quick else 1, f_seconds=2.0 if args.quick else 10.0)
    only = [name for name in "abcdefg" if name in args.only]
    started = time.perf_counter()
    for name in only:
        if name == "g":
            continue
        workload = getattr(bench, name)
        print(f"[{time.perf_counter() - started:6.1f}s] {name}: warm-up", flush=True)
        fresh_heap()
        workload(False)
        for index in range(runs):
            print(
                f"[{time.perf_counter() - started:6.1f}s] {name}: run {index + 1}/{runs}",
                flush=True,
            )
            fresh_heap()
            workload(True)
    g: dict[str, Any] | None = None
    if "g" in only:
        g = _voice(args.quick, started)
    seconds = time.perf_counter() - started
    rows = [row for row in bench.rows.values() if row.values]
    info = machine(runs, seconds)
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
    page = ROOT / "docs" / "performance.md"
    update_readme(page, readme_block(rows, info))
    update_readme(page, voice_block(g, info), G_BEGIN, G_END, G_SECTION)
    print(f"wrote {RESULTS.relative_to(ROOT)} and the tables of docs/performance.md")
    if failed:
        print("targets not met: " + ", ".join(f"{r.key} ({r.workload})" for r in failed))
    return 0


def _readme_from_json() -> int:
    data = json.loads(RESULTS.read_text(encoding="utf-8"))
    bench = Bench(scale=managers.MANAGERS // data["sizes"]["managers"], f_seconds=10.0)
    rows = []
    for key, saved in data["rows"].items():
        row = bench.rows[key]
        row.workload, row.measure = saved["workload"], saved["measure"]
        row.values = list(saved["runs"])
        row.cpu_values = list(saved.get("cpu_time_runs") or [])
        row.floor_values = list(saved.get("floor_runs") or [])
        row.ratios = list(saved.get("ratio_runs") or [])
        rows.append(row)
    page = ROOT / "docs" / "performance.md"
    update_readme(page, readme_block(rows, data["machine"]))
    print(text_table(rows))
    if "g" in data:
        update_readme(page, voice_block(data["g"], data["machine"]), G_BEGIN, G_END, G_SECTION)
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
