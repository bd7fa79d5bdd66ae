"""Soak and fault-injection runs for charivo_fsm (``make soak`` = ``python -m soak``).

Three runs, each with many concurrent sessions driven by random programs (start,
messages, audio, tool calls with slow, failing, hanging and misbehaving handlers,
updates, interrupts, stops, restarts, callers that give up, bad input):

1. :func:`run_virtual` on asyncio with a looptime virtual clock, over a chaos
   transport that fails, hangs past ``transport_timeout``, drops the connection,
   emits events out of order and hands garbage to the manager's callback;
2. the same on trio with ``MockClock(autojump_threshold=0)``;
3. :func:`run_openai`: the real OpenAI transport against local servers (real
   sockets, real clock) that drop connections and send garbage.

Each report asserts: tool calls received = announced = outcomes, per call (D8);
sessions started = ended (D2); no task alive after the managers exited; the leak
check: per emitted event kind, the payloads sampled in the first half of the run
are gone at its end (while every manager is still alive); memory growth between
the first and the last tenth within 5 %; every ``stop_session`` within
``transport_timeout`` + 1 s; no violation (stuck calls, non-Charivo exceptions,
refused input that changed state, engine bug reports).  Faults include tool
handlers, transports and listeners raising foreign cancellations and other
``BaseException`` subclasses.  A run always does all its planned work (its size
fits a loaded 2-core machine): its verdict depends on the invariants only, never
on how fast the machine is.
"""

from __future__ import annotations

from .runner import API_KEY, SoakConfig, SoakReport, run_openai, run_virtual

__all__ = ["API_KEY", "SoakConfig", "SoakReport", "format_report", "run_openai", "run_virtual"]

_HEADLINE_COUNTS = (
    "transport events delivered",
    "emitted events",
    "stop_session calls",
    "bad input refused",
    "listener failures injected",
)


def _mib(value: float) -> str:
    return f"{value / (1024 * 1024):.1f} MiB"


def format_report(report: SoakReport) -> str:
    """A human-readable account of one run, ending with PASS or the failures."""
    c, cfg, stats = report.stats.counts, report.config, report.stats
    unit = "virtual s" if report.virtual else "s"
    lines = [
        f"== {report.name} ==",
        f"sessions {cfg.sessions} | {report.covered:.1f} of {cfg.duration:g} {unit} "
        f"| wall {report.wall:.1f} s | transport_timeout {cfg.transport_timeout:g} s",
        f"tool calls: received {c['tool calls received']}, realtime:tool:call "
        f"{c['realtime:tool:call']}, outcomes {c['tool outcomes']} (result "
        f"{c['realtime:tool:result']}, error {c['realtime:tool:error']}), "
        f"send_tool_result {c['send_tool_result calls']}",
        f"sessions: started {c['sessions started']}, ended {c['sessions ended']} (user "
        f"{c['sessions ended (user)']}, remote {c['sessions ended (remote)']}, error "
        f"{c['sessions ended (error)']}), open after exit {report.open_sessions}",
        f"tasks alive after every manager exited: {len(report.tasks_alive)}",
        f"memory, first -> last tenth: RSS {_mib(report.rss_first)} -> {_mib(report.rss_last)} "
        f"({report.rss_growth:+.1%}), live allocations {report.blocks_first:,.0f} -> "
        f"{report.blocks_last:,.0f} ({report.blocks_growth:+.1%})",
        f"longest stop_session {stats.max_stop:.3f} {unit}, longest manager exit "
        f"{stats.max_exit:.3f} {unit} (bound {report.stop_bound:g})",
        "counts: " + ", ".join(f"{name} {c[name]}" for name in _HEADLINE_COUNTS),
    ]
    faults = sorted((k, v) for k, v in c.items() if k.startswith("fault"))
    lines.append("faults injected: " + ", ".join(f"{k[7:]} {v}" for k, v in faults))
    survivors = report.survivors
    sampled = sum(n for _alive, n in survivors.values())
    alive = sum(a for a, _n in survivors.values())
    lines.append(
        f"leak check (first-half payloads alive at the end, per event kind): {alive} of "
        f"{sampled} sampled over {len(survivors)} kinds"
        + "".join(
            f"; {name}: {a} of {n}" for name, (a, n) in sorted(survivors.items()) if a
        )
    )
    actions = sorted((k, v) for k, v in c.items() if k.startswith("action"))
    lines.append("actions: " + ", ".join(f"{k[8:]} {v}" for k, v in actions))
    raised = sorted((k, v) for k, v in c.items() if k.startswith("raised"))
    lines.append("caller errors: " + ", ".join(f"{k[7:]} {v}" for k, v in raised))
    logs = sorted((k, v) for k, v in c.items() if k.startswith("log "))
    lines.append("engine log records: " + ", ".join(f"{k[4:]} {v}" for k, v in logs))
    if stats.rig_errors:
        lines.append(f"test-rig errors (not the engine): {dict(stats.rig_errors)}")
    failures = report.failures()
    lines.append("RESULT: PASS" if not failures else "RESULT: FAIL")
    lines += [f"  - {failure}" for failure in failures]
    return "\n".join(lines)
