"""The workloads a-f as one object: the rows of the table, their targets, and a method
per workload that runs it once and records its figures (``record=False``: a warm-up)."""

from __future__ import annotations

import datetime
import functools
import os
import platform
from collections.abc import Callable
from typing import Any

from . import settings
from .report import NOISE, Row
from .settings import BACKEND


def _at_most(limit: float) -> Callable[[float], bool]:
    return lambda value: value <= limit


def _at_least(limit: float) -> Callable[[float], bool]:
    return lambda value: value >= limit


class Bench:
    def __init__(self, scale: int, f_seconds: float) -> None:
        self.scale = scale
        self.f_seconds = f_seconds
        n_events = settings.EVENTS // scale
        n_calls = settings.CALLS // scale
        n_managers = settings.MANAGERS // scale
        n_updates = settings.UPDATES // scale
        n_deltas = settings.DELTAS // scale
        n_sessions = settings.SESSIONS // scale
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
        # Issue 12's targets: a within 8× its emit floor; b one at a time 1.5× the
        # baseline's rate; c, d, e, f no regression against the baseline (within the
        # run's noise, see Row.no_regression).
        for key in ("a1", "a2"):
            self.rows[key].ratio_target = 8.0
        for key in ("b1", "b2"):
            self.rows[key].higher_is_better = True
        self.rows["b2"].baseline_target = ("at_least", 1.5)
        for key in ("c1", "c2", "d1", "e1", "e2", "f1", "f2", "f4"):
            self.rows[key].baseline_target = ("no_regression", NOISE)
        for key in ("d2", "d3"):
            self.rows[key].compare = False
        for key in ("a1", "a2", "b1", "b2", "c1", "c2", "d1", "e1", "f2", "f4"):
            self.rows[key].readme = True

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
    # (each imports its workload code, and with it charivo_fsm, when it runs: in a child
    # process, see benchmarks.child)

    def a(self, record: bool) -> None:
        from . import events
        from .common import run

        count = self.sizes["events"]
        if self.pairs is None:
            self.pairs = run(events.emit_pairs_of_one_cycle)
        burst = run(functools.partial(events.events_workload, count, 0))
        drained = run(functools.partial(events.events_workload, count, settings.DRAIN_EVERY))
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
        from . import tools
        from .common import run

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
        from . import managers

        count = self.sizes["managers"]
        times = managers.create_managers(count)
        memory = managers.manager_memory(count)
        self.add(record, "c1", times["us_manager"], cpu=times["cpu_us_manager"])
        self.add(record, "c2", memory["bytes_manager"] / 1024)
        self.add(record, "c3", times["us_with_transport"], cpu=times["cpu_us_with_transport"])
        self.add(record, "c4", memory["bytes_transport"] / 1024)

    def d(self, record: bool) -> None:
        from . import refresh
        from .common import run

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
        from . import events
        from .common import run

        result = run(functools.partial(events.long_response, self.sizes["deltas"]))
        self.add(record, "e1", result["ratio"], cpu=result["cpu_ratio"])
        self.add(record, "e2", result["first_us"], cpu=result["first_cpu_us"])

    def f(self, record: bool) -> None:
        from . import sessions
        from .common import run

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


# ------------------------------------------------------------ runs in other processes


def figures(bench: Bench) -> dict[str, dict[str, list[float]]]:
    """The figures a run recorded, by row (what a child process hands back)."""
    return {
        key: {
            "values": row.values,
            "cpu": row.cpu_values,
            "floor": row.floor_values,
            "ratios": row.ratios,
        }
        for key, row in bench.rows.items()
        if row.values
    }


def merge(bench: Bench, found: dict[str, Any], *, baseline: bool = False) -> None:
    """Add the figures of a child's run to ``bench``'s rows: as this tree's runs, or as
    the baseline's (``baseline=True``)."""
    for key, recorded in found["rows"].items():
        row = bench.rows[key]
        if baseline:
            row.baseline_values += recorded["values"]
            row.baseline_cpu_values += recorded["cpu"]
            row.baseline_ratios += recorded["ratios"]
        else:
            row.values += recorded["values"]
            row.cpu_values += recorded["cpu"]
            row.floor_values += recorded["floor"]
            row.ratios += recorded["ratios"]
    if not baseline:
        for name, values in found["extra"].items():
            bench.extra.setdefault(name, []).extend(values)


def drop_baseline(bench: Bench, workload: str) -> None:
    """Forget the baseline's figures of one workload (its baseline failed to run)."""
    for key, row in bench.rows.items():
        if key.startswith(workload):
            row.baseline_values.clear()
            row.baseline_cpu_values.clear()
            row.baseline_ratios.clear()
