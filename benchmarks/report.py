"""The result table: rows, plain-text rendering, Markdown rendering, README update."""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BEGIN = "<!-- benchmarks:begin (written by `make bench`) -->"
END = "<!-- benchmarks:end -->"


@dataclass
class Row:
    """One line of the table: a figure measured in every run (and maybe its floor)."""

    key: str
    workload: str
    measure: str
    unit: str
    original: str
    target: str
    check: Callable[[float], bool] | None
    digits: int = 2
    values: list[float] = field(default_factory=list)
    # The same figure from the process's CPU time instead of the wall clock (timed rows).
    cpu_values: list[float] = field(default_factory=list)
    # The floor of this figure, in the same unit, measured in the same runs, and the
    # cost ratio of each run (the figure's time over the floor's time, >= 1 is slower).
    floor_values: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    ratio_target: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def met(self) -> bool | None:
        results: list[bool] = []
        if self.check is not None:
            results.append(self.check(self.median))
        if self.ratio_target is not None and self.ratio is not None:
            results.append(self.ratio <= self.ratio_target)
        return all(results) if results else None

    def fmt(self, value: float) -> str:
        if self.digits == 0:
            return f"{value:,.0f}"
        return f"{value:,.{self.digits}f}"

    def as_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "measure": self.measure,
            "unit": self.unit,
            "median": self.median,
            "min": min(self.values),
            "max": max(self.values),
            "runs": self.values,
            "cpu_time_median": statistics.median(self.cpu_values) if self.cpu_values else None,
            "cpu_time_runs": self.cpu_values or None,
            "floor_median": statistics.median(self.floor_values) if self.floor_values else None,
            "floor_runs": self.floor_values or None,
            "ratio_to_floor": self.ratio,
            "ratio_runs": self.ratios or None,
            "original": self.original,
            "target": self.target,
            "met": self.met,
        }


def _cells(row: Row) -> list[str]:
    spread = f"{row.fmt(min(row.values))}–{row.fmt(max(row.values))}"
    cpu = row.fmt(statistics.median(row.cpu_values)) if row.cpu_values else "—"
    floor = row.fmt(statistics.median(row.floor_values)) if row.floor_values else "—"
    ratio = f"{row.ratio:.2f}×" if row.ratio is not None else "—"
    met = {True: "yes", False: "**no**", None: "—"}[row.met]
    return [
        row.workload,
        f"{row.measure} ({row.unit})",
        row.fmt(row.median),
        spread,
        cpu,
        floor,
        ratio,
        row.original,
        row.target,
        met,
    ]


HEADER = [
    "workload",
    "measure",
    "median",
    "min–max",
    "CPU-time median",
    "floor",
    "× floor",
    "original (Node 20)",
    "target",
    "met",
]


def text_table(rows: Sequence[Row]) -> str:
    lines = [HEADER] + [_cells(row) for row in rows]
    lines = [[cell.replace("**", "") for cell in line] for line in lines]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    rendered = []
    for index, line in enumerate(lines):
        rendered.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if index == 0:
            rendered.append("  ".join("-" * width for width in widths))
    return "\n".join(rendered)


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        lines.append("| " + " | ".join(_cells(row)) + " |")
    return "\n".join(lines)


def readme_block(rows: Sequence[Row], machine: dict[str, Any]) -> str:
    return "\n".join(
        [
            BEGIN,
            "",
            f"Measured on {machine['date']}: `{machine['arch']}`, {machine['cpus']} CPUs, "
            f"{machine['python']}, {machine['backend']} backend, median of "
            f"{machine['runs']} runs after a warm-up (`make bench` took "
            f"{machine['seconds']:.0f} s{_load(machine)}).",
            "",
            markdown_table(rows),
            "",
            END,
        ]
    )


def _load(machine: dict[str, Any]) -> str:
    load = machine.get("load_average")
    if not load:
        return ""
    return f"; load average {load[0]:.1f} at the end, on {machine['cpus']} CPUs"


DEFAULT_SECTION = """## Performance

`make bench` (`python -m benchmarks`) runs the workloads below and writes this table.
"""


def update_readme(
    path: Path, block: str, begin: str = BEGIN, end: str = END, section: str = DEFAULT_SECTION
) -> None:
    """Replace the generated block of the page's Performance table (docs/performance.md;
    appending the section at the end of the page when it is missing); nothing else is
    touched."""
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), flags=re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _match: block, text, count=1)
    else:
        if not text.endswith("\n"):
            text += "\n"
        text += "\n" + section + "\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


# ------------------------------------------------------------------ workload g

G_BEGIN = "<!-- benchmarks-g:begin (written by `make bench`) -->"
G_END = "<!-- benchmarks-g:end -->"
G_SECTION = """## g. Voice sessions per core

`make bench` writes this table.
"""
G_HEADER = [
    "sessions",
    "client",
    "CPU ms per session-second",
    "× floor",
    "× peer",
    "busy (CPU s/s)",
    "event lag p50 (ms)",
    "event lag p99 (ms)",
    "mic lateness p99 (ms)",
    "memory per session (KB)",
    "audio deltas/s per session",
    "server CPU s/s, lateness (ms)",
    "keeps up",
]


def _f(value: Any, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "—"
    return f"{value:,.{digits}f}"


def voice_rows(g: dict[str, Any]) -> list[list[str]]:
    rows = []
    for key, summary in g["summary"].items():
        sessions, kind = key.split(":")
        ratios = g["ratios"].get(sessions, {})
        to_floor = _f(ratios.get("to_floor")) + "×" if kind == "charivo" else ""
        to_peer = _f(ratios.get("to_peer")) + "×" if kind == "charivo" else ""
        cpu = summary["cpu_per_session_s"]
        rows.append(
            [
                sessions,
                kind,
                _f(cpu * 1000 if cpu is not None else None, 3),
                to_floor.replace("—×", "—"),
                to_peer.replace("—×", "—"),
                _f(summary["busy"]),
                _f(summary["lag_p50_ms"], 1),
                _f(summary["lag_p99_ms"], 1),
                _f(summary["mic_lag_p99_ms"], 1),
                _f(summary["rss_per_session_kb"], 0),
                _f(summary["audio_per_session_s"], 1),
                f"{_f(summary['server_cpu'])}, {_f(summary['server_late_ms'], 0)}",
                ("yes" if summary["kept_up"] else "**no**")
                + (" (server behind)" if summary.get("server_behind") else ""),
            ]
        )
    return rows


def voice_text(g: dict[str, Any]) -> str:
    lines = [G_HEADER] + [[c.replace("**", "") for c in row] for row in voice_rows(g)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(G_HEADER))]
    out = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(line)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    kept = ", ".join(f"{kind} {n}" for kind, n in g["max_kept_up"].items())
    return "\n".join(out) + f"\nlargest N kept up (lag p99 ≤ 50 ms): {kept}"


def voice_block(g: dict[str, Any], machine: dict[str, Any]) -> str:
    settings = g["settings"]
    kept = g["max_kept_up"]
    lines = [
        G_BEGIN,
        "",
        f"Measured on {machine['date']}: `{machine['arch']}`, {machine['cpus']} CPUs, "
        f"{machine['python']}; median of {settings['runs']} runs per size and client, "
        f"{settings['warmup']:g} s warm-up and {settings['seconds']:g} s measured per run"
        f"{_load(machine)}. Ratios: charivo's CPU per session-second over the other "
        "client's, run by run (the three clients of a run ran back to back), median.",
        "",
        "| " + " | ".join(G_HEADER) + " |",
        "|" + "---|" * len(G_HEADER),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in voice_rows(g)]
    lines += [
        "",
        "Largest number of sessions that kept up (event lag p99 ≤ 50 ms), of the sizes "
        "run: " + ", ".join(f"{kind} **{n or 'none'}**" for kind, n in kept.items()) + ".",
        "",
        G_END,
    ]
    return "\n".join(lines)
