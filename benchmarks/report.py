"""The result tables: rows, plain-text rendering, Markdown rendering (the full tables of
docs/performance.md, the compact one of the README), the update of a page's block."""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BEGIN = "<!-- benchmarks:begin (written by `make bench`) -->"
END = "<!-- benchmarks:end -->"

# "No regression" against the baseline: not worse than the baseline's worst run by more
# than this (see Row.no_regression).
NOISE = 0.05


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
    # The same figure of the baseline package (``--baseline``, the engine of an earlier
    # commit), run i of the baseline run right after run i of the working tree.
    baseline_values: list[float] = field(default_factory=list)
    baseline_cpu_values: list[float] = field(default_factory=list)
    baseline_ratios: list[float] = field(default_factory=list)
    # A rate (b): higher is better; every other compared row: lower is better.
    higher_is_better: bool = False
    # False for counts and flags (d2, d3): no "× baseline".
    compare: bool = True
    # Issue 12's target against the baseline: ("at_least", 1.5) (× baseline, rate over
    # rate) or ("no_regression", NOISE).
    baseline_target: tuple[str, float] | None = None
    # Shown in the README's compact table.
    readme: bool = False

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def vs_baseline(self) -> float | None:
        """Median over the runs of this run's figure over the baseline's figure of the
        run right after it (> 1 is slower for a time or a cost, faster for a rate)."""
        return _paired(self.values, self.baseline_values) if self.compare else None

    @property
    def vs_baseline_cpu(self) -> float | None:
        """:attr:`vs_baseline` from the CPU-time figures (less moved by other load)."""
        return _paired(self.cpu_values, self.baseline_cpu_values) if self.compare else None

    @property
    def targets(self) -> list[tuple[str, bool | None]]:
        """Every target of the row and whether it is met (None: not measured)."""
        found: list[tuple[str, bool | None]] = []
        if self.check is not None:
            found.append((self.target, self.check(self.median) if self.values else None))
        elif self.target not in ("(info)", "") and self.ratio_target is None:
            found.append((self.target, None))
        if self.ratio_target is not None:
            met = self.ratio <= self.ratio_target if self.ratio is not None else None
            found.append((f"≤ {self.ratio_target:g}× floor", met))
        if self.baseline_target is not None:
            kind, limit = self.baseline_target
            if kind == "at_least":
                vs = self.vs_baseline
                found.append((f"≥ {limit:g}× baseline", vs >= limit if vs is not None else None))
            else:
                found.append(("no regression", self.no_regression))
        return found

    @property
    def no_regression(self) -> bool | None:
        """Within the run's own noise: the median is no worse than the baseline's worst
        run by more than NOISE (≤ max × 1.05 for a time or a cost, ≥ min ÷ 1.05 for a
        rate)."""
        if not self.baseline_values or not self.values:
            return None
        if self.higher_is_better:
            return self.median >= min(self.baseline_values) / (1 + NOISE)
        return self.median <= max(self.baseline_values) * (1 + NOISE)

    @property
    def met(self) -> bool | None:
        results = [met for _text, met in self.targets if met is not None]
        return all(results) if results else None

    @property
    def target_text(self) -> str:
        texts = [text for text, _met in self.targets]
        return "; ".join(texts) if texts else self.target

    @property
    def met_text(self) -> str:
        met = self.met
        if met is None:
            return "—"
        if met:
            return "yes"
        missed = [text for text, ok in self.targets if ok is False]
        return "**no**" + (f" ({'; '.join(missed)})" if len(self.targets) > 1 else "")

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
            "target": self.target_text,
            "met": self.met,
            "baseline_median": (
                statistics.median(self.baseline_values) if self.baseline_values else None
            ),
            "baseline_runs": self.baseline_values or None,
            "baseline_cpu_time_runs": self.baseline_cpu_values or None,
            "baseline_ratio_runs": self.baseline_ratios or None,
            "vs_baseline": self.vs_baseline,
            "vs_baseline_cpu_time": self.vs_baseline_cpu,
            "targets": [{"target": text, "met": met} for text, met in self.targets],
        }


def _paired(values: Sequence[float], bases: Sequence[float]) -> float | None:
    pairs = [value / base for value, base in zip(values, bases, strict=False) if base]
    return statistics.median(pairs) if pairs else None


def _cells(row: Row) -> list[str]:
    spread = f"{row.fmt(min(row.values))}–{row.fmt(max(row.values))}"
    cpu = row.fmt(statistics.median(row.cpu_values)) if row.cpu_values else "—"
    floor = row.fmt(statistics.median(row.floor_values)) if row.floor_values else "—"
    ratio = f"{row.ratio:.2f}×" if row.ratio is not None else "—"
    if row.baseline_values:
        base = row.fmt(statistics.median(row.baseline_values))
        base += f" ({row.fmt(min(row.baseline_values))}–{row.fmt(max(row.baseline_values))})"
    else:
        base = "—"
    return [
        row.workload,
        f"{row.measure} ({row.unit})",
        row.fmt(row.median),
        spread,
        cpu,
        floor,
        ratio,
        base,
        _vs(row) + (f" (CPU {row.vs_baseline_cpu:.2f}×)" if row.vs_baseline_cpu else ""),
        row.original,
        row.target_text,
        row.met_text,
    ]


def _vs(row: Row) -> str:
    vs = row.vs_baseline
    return f"{vs:.2f}×" if vs is not None else "—"


HEADER = [
    "workload",
    "measure",
    "median",
    "min–max",
    "CPU-time median",
    "floor",
    "× floor",
    "baseline median (min–max)",
    "× baseline",
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
            f"{machine['runs']} runs{_method(machine)} (`make bench` took "
            f"{machine['seconds']:.0f} s{_load(machine)}). {_baseline(machine)}",
            "",
            markdown_table(rows),
            "",
            END,
        ]
    )


def _method(machine: dict[str, Any]) -> str:
    if machine.get("subprocess_runs"):
        return ", each in a fresh process after a warm-up at a tenth of the size"
    return " after a warm-up"


def _baseline(machine: dict[str, Any]) -> str:
    base = machine.get("baseline")
    if not base:
        return "No baseline was run (× baseline: —)."
    return (
        f"Baseline: `charivo_fsm` of commit `{base['rev']}` ({base['date']}), its runs "
        "interleaved with the working tree's (current, baseline, current, ...); × baseline "
        "is the median of each run's figure over the baseline run right after it (a time "
        "or cost: below 1 is faster; a rate: above 1 is faster); no regression: not worse "
        f"than the baseline's worst run by more than {NOISE:.0%}."
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


# ------------------------------------------------------------- the README's table

R_BEGIN = "<!-- benchmarks-readme:begin (written by `make bench`) -->"
R_END = "<!-- benchmarks-readme:end -->"
R_SECTION = """## Performance

`make bench` writes this table.
"""


def compact_block(rows: Sequence[Row], g: dict[str, Any] | None, machine: dict[str, Any]) -> str:
    """The README's table: a line per headline row of a-f and one per session count of
    g (charivo's figures and its ratios to the floor and the peer), from one run."""
    base = machine.get("baseline")
    against = f"× `{base['rev']}`" if base else "× baseline"
    load = machine.get("load_average")
    lines = [
        R_BEGIN,
        "",
        f"One `make bench` run on {machine['date']} (`{machine['arch']}`, "
        f"{machine['cpus']} CPUs, {machine['python']}"
        + (f", load average {load[0]:.1f} at the end" if load else "")
        + f"; {machine['seconds'] / 60:.0f} min). a–f: medians of {machine['runs']} runs; "
        "× floor: the time over the floor's in the same runs; "
        + (
            f"{against}: the figure over the same figure of the engine of commit "
            f"`{base['rev']}`, runs interleaved (a time: below 1 is faster; a rate: "
            "above 1 is faster); no regression: no worse than that engine's worst run "
            f"+ {NOISE:.0%}."
            if base
            else "no baseline engine was run in it."
        ),
        "",
        f"| workload | median | × floor | {against} | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if not row.readme:
            continue
        ratio = f"{row.ratio:.1f}×" if row.ratio is not None else "—"
        lines.append(
            f"| {row.workload}: {row.measure} | {row.fmt(row.median)} {row.unit} | {ratio} | "
            f"{_vs(row)} | {row.target_text} | {row.met_text} |"
        )
    if g is not None:
        lines += [
            "",
            "g. Live voice sessions over the real transport, client process only: "
            "charivo's CPU per session-second, over the bare `websockets` floor's and "
            "the `openai-agents` peer's in the same runs.",
            "",
            "| sessions | CPU ms per session-second | × floor | × peer | event lag p99 | "
            "keeps up |",
            "|---|---|---|---|---|---|",
        ]
        for key, summary in g["summary"].items():
            sessions, kind = key.split(":")
            if kind != "charivo":
                continue
            ratios = g["ratios"].get(sessions, {})
            cpu = summary["cpu_per_session_s"]
            floor = _f(ratios.get("to_floor"))
            peer = _f(ratios.get("to_peer"))
            lines.append(
                f"| {sessions} | {_f(cpu * 1000 if cpu is not None else None, 2)} | "
                f"{floor}{'×' if floor != '—' else ''} | {peer}{'×' if peer != '—' else ''} | "
                f"{_f(summary['lag_p99_ms'], 1)} ms | "
                f"{'yes' if summary['kept_up'] else '**no**'} |"
            )
        kept = g["max_kept_up"]
        lines += [
            "",
            "Most sessions that kept up with real time (event lag p99 ≤ 50 ms): "
            + ", ".join(f"{kind} {n or 'none'}" for kind, n in kept.items())
            + f" (of the sizes run: {', '.join(_sizes_run(g))}).",
        ]
    lines += ["", R_END]
    return "\n".join(lines)


def _sizes_run(g: dict[str, Any]) -> list[str]:
    return sorted({key.split(":")[0] for key in g["summary"]}, key=int)
