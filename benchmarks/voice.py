"""Workload g: voice sessions per core over the real transport, side by side with the
floor (bare ``websockets``) and the peer (``openai-agents``).

:func:`voice_sessions` starts :mod:`benchmarks.voice_server` in a process of its own,
then for each size N and each run starts one client process per kind
(:mod:`benchmarks.voice_client`), the kinds in a rotating order so that every kind
runs as often first, middle and last, and one run of all kinds is a few tens of
seconds long: the ratios of a run compare figures measured minutes apart at most, on
the same machine under the same load.  Only the client process is measured.

A kind *keeps up* at N when the event lag p99 (server send time → application) of
its median run is at most :data:`LAG_LIMIT_MS`; once a kind falls behind, it is not
run at larger sizes.  The server's own lateness and CPU in each client's window are
kept with the run (``server_late_ms``, ``server_cpu``): a run where the server itself
fell behind is flagged instead of counted against the client.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

KINDS = ("charivo", "floor", "peer")
LAG_LIMIT_MS = 50.0
SERVER_LATE_LIMIT_MS = 20.0


class Server:
    """The voice server process and its per-second ``tick`` lines."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.voice_server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if len(line) != 2 or line[0] != "listening":
            self.process.kill()
            raise RuntimeError(f"the voice server did not start: {line}")
        self.url = f"ws://127.0.0.1:{line[1]}/v1/realtime"
        self.ticks: list[tuple[float, float, float]] = []  # (time, cpu, late ms)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            parts = line.split()
            if parts and parts[0] == "tick":
                self.ticks.append((float(parts[1]), float(parts[2]), float(parts[7])))

    def window(self, begin: float, end: float) -> tuple[float, float]:
        """(CPU seconds per second, worst lateness in ms) of the server in a window."""
        inside = [tick for tick in self.ticks if begin < tick[0] <= end + 1.0]
        if not inside:
            return float("nan"), float("nan")
        return (
            sum(tick[1] for tick in inside) / len(inside),
            max(tick[2] for tick in inside),
        )

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _client(kind: str, sessions: int, url: str, warmup: float, seconds: float) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.voice_client",
        "--kind",
        kind,
        "--sessions",
        str(sessions),
        "--url",
        url,
        "--warmup",
        str(warmup),
        "--seconds",
        str(seconds),
    ]
    timeout = 120 + sessions * 0.2 + warmup + seconds
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"kind": kind, "sessions": sessions, "failed": "timed out"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    return {"kind": kind, "sessions": sessions, "failed": done.stderr[-400:] or "no result"}


def available_kinds() -> tuple[str, ...]:
    """The clients this environment can run (the floor needs ``websockets``, the peer
    ``openai-agents``: both only in the benchmark environment)."""
    import importlib.util

    kinds = ["charivo"]
    if importlib.util.find_spec("websockets") is not None:
        kinds.append("floor")
        if importlib.util.find_spec("agents") is not None:
            kinds.append("peer")
    return tuple(kinds)


def voice_sessions(
    sizes: Sequence[int],
    runs: int,
    *,
    warmup: float,
    seconds: float,
    kinds: Sequence[str] = KINDS,
    log: Any = print,
) -> dict[str, Any]:
    """Run workload g; returns every run and a summary per (N, kind)."""
    server = Server()
    results: list[dict[str, Any]] = []
    behind: set[str] = set()
    try:
        for sessions in sizes:
            active = [kind for kind in kinds if kind not in behind]
            if "charivo" not in active:
                break
            for index in range(runs):
                shift = index % len(active)
                order = active[shift:] + active[:shift]
                for kind in order:
                    log(f"g: {sessions} sessions, run {index + 1}/{runs}: {kind}")
                    result = _client(kind, sessions, server.url, warmup, seconds)
                    result["run"] = index
                    if "window" in result:
                        cpu, late = server.window(*result["window"])
                        result["server_cpu"] = cpu
                        result["server_late_ms"] = late
                    results.append(result)
            for kind in active:
                summary = summarize(results, sessions, kind)
                if not summary["kept_up"]:
                    behind.add(kind)
    finally:
        server.close()
    sizes_run = sorted({r["sessions"] for r in results})
    summaries = {
        f"{n}:{kind}": summarize(results, n, kind)
        for n in sizes_run
        for kind in kinds
        if any(r["sessions"] == n and r["kind"] == kind for r in results)
    }
    ratios = {str(n): ratios_at(results, n) for n in sizes_run}
    kept = {
        kind: max(
            (n for n in sizes_run if summaries.get(f"{n}:{kind}", {}).get("kept_up")),
            default=0,
        )
        for kind in kinds
    }
    return {
        "runs": results,
        "summary": summaries,
        "ratios": ratios,
        "max_kept_up": kept,
        "behind": sorted(behind),
        "settings": {"sizes": list(sizes), "runs": runs, "warmup": warmup, "seconds": seconds},
    }


FIELDS = (
    "cpu_per_session_s",
    "busy",
    "lag_p50_ms",
    "lag_p99_ms",
    "mic_lag_p99_ms",
    "rss_per_session_kb",
    "audio_per_session_s",
    "events_per_session_s",
    "server_cpu",
    "server_late_ms",
)


def summarize(results: list[dict[str, Any]], sessions: int, kind: str) -> dict[str, Any]:
    mine = [r for r in results if r["sessions"] == sessions and r["kind"] == kind]
    good = [r for r in mine if "failed" not in r]
    summary: dict[str, Any] = {"runs": len(mine), "failed_runs": len(mine) - len(good)}
    for field in FIELDS:
        values = [r[field] for r in good if field in r]
        summary[field] = statistics.median(values) if values else None
    summary["errors"] = sum(r.get("errors", 0) for r in good)
    lag = summary["lag_p99_ms"]
    summary["kept_up"] = bool(good) and lag is not None and lag <= LAG_LIMIT_MS
    late = summary["server_late_ms"]
    summary["server_behind"] = late is not None and late > SERVER_LATE_LIMIT_MS
    return summary


def ratios_at(results: list[dict[str, Any]], sessions: int) -> dict[str, Any]:
    """charivo's CPU per session-second over the floor's and over the peer's, run by
    run (the kinds of one run ran back to back), and their medians."""
    by_run: dict[int, dict[str, float]] = {}
    for r in results:
        if r["sessions"] == sessions and "failed" not in r:
            by_run.setdefault(r["run"], {})[r["kind"]] = r["cpu_per_session_s"]
    out: dict[str, Any] = {}
    for other in ("floor", "peer"):
        values = [
            cpus["charivo"] / cpus[other]
            for cpus in by_run.values()
            if "charivo" in cpus and other in cpus
        ]
        out[f"to_{other}_runs"] = values
        out[f"to_{other}"] = statistics.median(values) if values else None
    return out


def main() -> int:
    """``python -m benchmarks.voice [--quick]``: workload g alone, printed as JSON."""
    quick = "--quick" in sys.argv
    started = time.perf_counter()
    result = voice_sessions(
        [50] if quick else [50, 100, 200, 500, 1000],
        1 if quick else 3,
        warmup=2.0 if quick else 3.0,
        seconds=4.0 if quick else 10.0,
        kinds=available_kinds(),
    )
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    print(f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
