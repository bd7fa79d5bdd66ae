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


def update_readme(path: Path, block: str) -> None:
    """Replace the generated block of the page's Performance table (docs/performance.md;
    appending the section at the end of the page when it is missing); nothing else is
    touched."""
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), flags=re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _match: block, text, count=1)
    else:
        if not text.endswith("\n"):
            text += "\n"
        text += "\n" + DEFAULT_SECTION + "\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
