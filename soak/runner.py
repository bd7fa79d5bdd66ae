"""Soak runs: many concurrent sessions under fault injection, then the checks.

* :func:`run_virtual` — ``sessions`` managers over :class:`~soak.chaos.ChaosTransport`
  on asyncio (looptime virtual clock) or trio (``MockClock`` autojump) for a virtual
  duration, bounded by a wall budget;
* :func:`run_openai` — managers over the real
  :class:`~charivo_fsm.transports.openai.OpenAIRealtimeTransport`, each against its
  own :class:`~charivo_fsm.testing.LocalRealtimeServer` (real sockets, real clock)
  that drops connections, sends garbage, delays or rejects updates and so on.

Both return a :class:`SoakReport`; :meth:`SoakReport.failures` lists what broke.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import random
import resource
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import anyio
import sniffio

from charivo_fsm import RealtimeSessionConfig, create_realtime_manager
from charivo_fsm.events import ToolCall, TransportEvent
from charivo_fsm.model import ConnectionState, SessionStatus

from .chaos import ChaosTransport, Faults, make_tools
from .ledger import Checker, CountingHandler, RunStats, call_key
from .program import Program

__all__ = ["SoakConfig", "SoakReport", "run_openai", "run_virtual"]


@dataclass(frozen=True)
class SoakConfig:
    """One soak run's parameters (seconds are virtual for :func:`run_virtual`)."""

    sessions: int = 200
    duration: float = 240.0
    """Length of the measured run."""
    warmup: float = 30.0
    """Random programs and faults before the measured run (not measured)."""
    wall_budget: float | None = None
    """Wall-clock seconds after which every program stops (None: the run always
    covers its whole duration; its size is chosen to fit a loaded 2-core machine).
    A run cut short by a wall budget is reported, never failed for it."""
    seed: int = 20240611
    transport_timeout: float = 2.0
    reconnect_delays: tuple[float, ...] = (0.1, 0.25, 0.5)
    tool_timeout: float = 1.0
    action_gap: float = 1.0
    event_gap: float = 0.3
    samples: int = 40
    memory_limit: float | None = 0.05
    """Allowed RSS growth between the first and the last tenth (None: report only)."""
    blocks_limit: float | None = 0.05
    """Allowed growth of the live Python allocations (``sys.getallocatedblocks``)."""
    survivor_limit: float = 0.005
    """The leak check, per emitted event kind: at most this share (and at most 3) of
    the payloads sampled in the first half of the run may still be alive at its end."""


@dataclass
class SoakReport:
    name: str
    backend: str
    config: SoakConfig
    stats: RunStats
    virtual: bool
    covered: float = 0.0
    wall: float = 0.0
    tasks_alive: list[str] = field(default_factory=list)
    rss_first: float = 0.0
    rss_last: float = 0.0
    blocks_first: float = 0.0
    blocks_last: float = 0.0
    open_sessions: int = 0
    bad_final_states: list[str] = field(default_factory=list)
    survivors: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per emitted event kind: first-half payloads alive at the end, sampled."""

    def leaks(self) -> list[str]:
        """The event kinds whose first-half payloads outlived the second half."""
        found = []
        for name, (alive, sampled) in sorted(self.survivors.items()):
            if alive > max(3, self.config.survivor_limit * sampled):
                found.append(f"{name}: {alive} of {sampled} sampled first-half payloads alive")
        return found

    @property
    def rss_growth(self) -> float:
        return self.rss_last / self.rss_first - 1 if self.rss_first else 0.0

    @property
    def blocks_growth(self) -> float:
        return self.blocks_last / self.blocks_first - 1 if self.blocks_first else 0.0

    @property
    def stop_bound(self) -> float:
        return self.config.transport_timeout + 1.0

    def failures(self) -> list[str]:
        """Every failed check, in words (empty: the run passed)."""
        c = self.stats.counts
        found: list[str] = []
        received, announced = c["tool calls received"], c["realtime:tool:call"]
        outcomes = c["tool outcomes"]
        if not received == announced == outcomes:
            found.append(
                f"tool calls: {received} received, {announced} announced, {outcomes} outcomes"
            )
        unsettled = self.stats.unsettled_calls()
        if unsettled:
            found.append(f"{len(unsettled)} tool calls unsettled, e.g. {unsettled[:3]}")
        if c["sessions started"] != c["sessions ended"] or self.open_sessions:
            found.append(
                f"sessions: {c['sessions started']} started, {c['sessions ended']} ended, "
                f"{self.open_sessions} still open"
            )
        if self.tasks_alive:
            found.append(f"{len(self.tasks_alive)} tasks alive: {self.tasks_alive[:5]}")
        limit = self.config.memory_limit
        if limit is not None and self.rss_growth > limit:
            found.append(f"RSS grew {self.rss_growth:.1%} (limit {limit:.0%})")
        limit = self.config.blocks_limit
        if limit is not None and self.blocks_growth > limit:
            found.append(f"live allocations grew {self.blocks_growth:.1%} (limit {limit:.0%})")
        if self.stats.max_stop > self.stop_bound:
            found.append(f"a stop_session took {self.stats.max_stop:.3f}s > {self.stop_bound:g}s")
        if self.stats.max_exit > self.stop_bound:
            found.append(f"leaving a manager took {self.stats.max_exit:.3f}s")
        if self.bad_final_states:
            found.append(f"final states: {self.bad_final_states[:3]}")
        if self.stats.violation_count:
            found.append(f"{self.stats.violation_count} violations: {self.stats.violations[:10]}")
        if c["tool calls received"] == 0 or c["sessions started"] == 0:
            found.append("the run did nothing (no tool call or no session)")
        leaks = self.leaks()
        if leaks:
            found.append("memory held by emitted payloads (leak): " + "; ".join(leaks))
        if not self.survivors:
            found.append("the leak check sampled no payload")
        return found

    def figures(self) -> dict[str, Any]:
        """The headline numbers, JSON-ready (for the README and ``--json``)."""
        c = self.stats.counts
        return {
            "name": self.name,
            "backend": self.backend,
            "sessions": self.config.sessions,
            "duration": self.config.duration,
            "covered": round(self.covered, 1),
            "wall": round(self.wall, 1),
            "tool_calls_received": c["tool calls received"],
            "tool_calls_announced": c["realtime:tool:call"],
            "tool_outcomes": c["tool outcomes"],
            "sessions_started": c["sessions started"],
            "sessions_ended": c["sessions ended"],
            "tasks_alive": len(self.tasks_alive),
            "rss_growth": round(self.rss_growth, 4),
            "blocks_growth": round(self.blocks_growth, 4),
            "max_stop": round(self.stats.max_stop, 3),
            "max_exit": round(self.stats.max_exit, 3),
            "stop_bound": self.stop_bound,
            "transport_events": c["transport events delivered"],
            "violations": self.stats.violation_count,
            "payload_kinds_checked": len(self.survivors),
            "payloads_sampled": sum(sampled for _alive, sampled in self.survivors.values()),
            "payloads_alive": sum(alive for alive, _sampled in self.survivors.values()),
            "faults": {k[7:]: v for k, v in sorted(c.items()) if k.startswith("fault: ")},
            "failures": self.failures(),
        }


# ------------------------------------------------------------------ measuring


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: the peak is the best we have
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _Sampler:
    """Samples memory at regular intervals; prunes the tool ledger."""

    def __init__(self, stats: RunStats, horizon: float) -> None:
        self.stats = stats
        self.horizon = horizon
        self.samples: list[tuple[float, int, int]] = []  # (time, rss, live blocks)
        self.ended_at: float | None = None
        self.survivors: dict[str, tuple[int, int]] = {}

    async def run(self, start: float, until: Callable[[], bool], interval: float) -> None:
        while True:
            await anyio.sleep(interval)
            now = anyio.current_time()
            if until():
                self.ended_at = now
                self.survivors = self.stats.survivors()  # the managers are still alive
                return
            self.stats.prune(self.horizon)
            gc.collect()
            self.samples.append((now - start, _rss_bytes(), sys.getallocatedblocks()))

    def tenths(self, covered: float) -> tuple[float, float, float, float]:
        first = [s for s in self.samples if s[0] <= covered / 10 + 1e-9]
        last = [s for s in self.samples if s[0] >= covered * 0.9 - 1e-9]
        if not first or not last:
            return 0.0, 0.0, 0.0, 0.0

        def mean(values: list[int]) -> float:
            return sum(values) / len(values)

        return (
            mean([s[1] for s in first]),
            mean([s[1] for s in last]),
            mean([s[2] for s in first]),
            mean([s[2] for s in last]),
        )


def _live_tasks() -> set[Any]:
    if sniffio.current_async_library() == "asyncio":
        return set(asyncio.all_tasks())
    import trio

    found: set[Any] = set()
    stack: list[Any] = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        found.add(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return found


def _task_name(task: Any) -> str:
    if isinstance(task, asyncio.Task):
        return f"{task.get_name()} {task.get_coro()!r}"
    return str(getattr(task, "name", task))


_ENGINE_LOGGER = "soak.engine"


class _Logs:
    """Counts the engine's log records for the duration of a run."""

    def __init__(self, stats: RunStats) -> None:
        self.handler = CountingHandler(stats)
        self.engine = logging.getLogger(_ENGINE_LOGGER)
        self.module = logging.getLogger("charivo_fsm")

    def __enter__(self) -> logging.Logger:
        self.engine.propagate = False
        self.engine.setLevel(logging.DEBUG)
        self.engine.addHandler(self.handler)
        self.module.addHandler(self.handler)
        self._level = self.module.level
        self.module.setLevel(logging.DEBUG)
        return self.engine

    def __exit__(self, *exc: object) -> None:
        self.engine.removeHandler(self.handler)
        self.module.removeHandler(self.handler)
        self.module.setLevel(self._level)


class Phase:
    """When the measured run starts and ends.

    Every session first sets up (server, transport, manager) and starts once.  When all
    of them have, the random programs and the faults begin; after ``cfg.warmup``
    seconds of that (caches, timer heaps, the last error each manager keeps and the
    like reach their working size) the measured run of ``cfg.duration`` seconds
    begins: its memory samples, its first and last tenth.  The wall budget counts from
    the very beginning.
    """

    def __init__(self, cfg: SoakConfig, *, warm_up_bound: float) -> None:
        self.cfg = cfg
        self.pending = cfg.sessions
        self.began = anyio.Event()
        self.start = math.inf
        self.deadline = math.inf
        budget = cfg.wall_budget
        self.wall_deadline = math.inf if budget is None else time.monotonic() + budget
        self.warm_up_bound = warm_up_bound
        self.on_begin: Callable[[Phase], None] | None = None

    def _begin(self) -> None:
        if not self.began.is_set():
            self.start = anyio.current_time() + self.cfg.warmup
            self.deadline = self.start + self.cfg.duration
            self.began.set()
            if self.on_begin is not None:
                self.on_begin(self)

    async def warmed(self) -> None:
        """Called once by every session when it is set up; returns when the programs
        begin (all sessions together)."""
        self.pending -= 1
        if self.pending <= 0:
            self._begin()
        with anyio.move_on_after(self.warm_up_bound):
            await self.began.wait()
        self._begin()  # a session that never got set up must not hold the others

    def over(self) -> bool:
        return anyio.current_time() >= self.deadline or time.monotonic() >= self.wall_deadline


SessionFn = Callable[[int, Phase, RunStats, logging.Logger], Coroutine[Any, Any, None]]


async def _soak(report: SoakReport, session: SessionFn) -> SoakReport:
    """Run ``session`` for every slot concurrently; then measure and fill ``report``."""
    cfg, stats = report.config, report.stats
    baseline = _live_tasks()
    wall_start = time.monotonic()
    phase = Phase(cfg, warm_up_bound=_stuck_bound(cfg))
    sampler = _Sampler(stats, 3 * cfg.transport_timeout + 2 * cfg.tool_timeout)

    def halves(began: Phase) -> None:
        # payloads emitted in the first half (less the tail, which the last
        # responses may still hold) are sampled for the leak check
        stats.first_half = (began.start, began.start + 0.45 * cfg.duration)

    phase.on_begin = halves

    async def sample() -> None:
        await phase.began.wait()
        await anyio.sleep(max(0.0, phase.start - anyio.current_time()))
        await sampler.run(phase.start, phase.over, cfg.duration / cfg.samples)

    with _Logs(stats) as engine_logger:
        async with anyio.create_task_group() as group:
            group.start_soon(sample)
            async with anyio.create_task_group() as sessions:
                for slot in range(cfg.sessions):
                    sessions.start_soon(session, slot, phase, stats, engine_logger)
    report.wall = time.monotonic() - wall_start
    ended = sampler.ended_at if sampler.ended_at is not None else anyio.current_time()
    report.covered = max(0.0, min(ended, phase.deadline) - phase.start)
    (report.rss_first, report.rss_last, report.blocks_first, report.blocks_last) = sampler.tenths(
        report.covered
    )
    report.tasks_alive = [_task_name(t) for t in _live_tasks() - baseline]
    report.survivors = sampler.survivors or stats.survivors()
    return report


def _check_final(report: SoakReport, label: str, checker: Checker, state: Any) -> None:
    if checker.open_session:
        report.open_sessions += 1
    if state.session.status not in (SessionStatus.IDLE, SessionStatus.STOPPED) or (
        state.connection not in (ConnectionState.IDLE, ConnectionState.ERROR)
    ):
        report.bad_final_states.append(
            f"{label}: {state.session.status}/{state.connection} after exit"
        )


def _stuck_bound(cfg: SoakConfig) -> float:
    attempts = len(cfg.reconnect_delays)
    return (attempts + 6) * cfg.transport_timeout + sum(cfg.reconnect_delays) + cfg.tool_timeout


# ------------------------------------------------------------------ virtual clock


def run_virtual(backend: str, cfg: SoakConfig) -> SoakReport:
    """The chaos-transport soak on ``backend`` ("asyncio" or "trio"), virtual time."""
    options: dict[str, Any]
    if backend == "asyncio":
        import looptime

        # One no-op cycle before each jump of the clock (looptime's default is 42, meant
        # for loops that also wait for threads or I/O; here nothing does): 2x faster.
        options = {"loop_factory": lambda: looptime.new_event_loop(noop_cycles=1)}
    elif backend == "trio":
        import trio.testing

        options = {"clock": trio.testing.MockClock(autojump_threshold=0)}
    else:
        raise ValueError(f"unknown backend {backend!r}")
    return anyio.run(_virtual_main, backend, cfg, backend=backend, backend_options=options)


async def _virtual_main(backend: str, cfg: SoakConfig) -> SoakReport:
    report = SoakReport(
        name=f"chaos transport ({backend}, virtual clock)",
        backend=backend,
        config=cfg,
        stats=RunStats(anyio.current_time),
        virtual=True,
    )

    async def session(slot: int, phase: Phase, stats: RunStats, logger: logging.Logger) -> None:
        rng = random.Random(f"{cfg.seed}:{backend}:{slot}")
        label = f"s{slot}"
        transport = ChaosTransport(
            rng,
            stats,
            label=label,
            timeout=cfg.transport_timeout,
            faults=Faults(),
            event_gap=cfg.event_gap,
        )
        checker = Checker(stats, label, rng=rng)

        def projector(context: Any) -> None:
            if rng.random() < 0.05:
                raise RuntimeError("projector bug")

        manager = create_realtime_manager(
            transport,
            tools=make_tools(rng, cfg.tool_timeout, stats),
            default_tool_timeout=cfg.tool_timeout,
            reconnect_delays=cfg.reconnect_delays,
            transport_timeout=cfg.transport_timeout,
            result_projectors=[projector],
            logger=logger,
            auto_refresh_tools=rng.random() < 0.5,
        )
        checker.manager = manager
        manager.set_event_emitter(checker)
        program = Program(
            manager,
            rng,
            stats,
            label=label,
            transport_calls=lambda: transport.calls,
            stuck_bound=_stuck_bound(cfg),
            give_up_after=cfg.transport_timeout / 2,
            stop_bound=cfg.transport_timeout + 1.0,
            trail=transport.trail,
        )
        async with anyio.create_task_group() as provider:
            async with manager:
                await program.warm_up()
                await phase.warmed()
                provider.start_soon(transport.run_server, phase.over)
                await program.run(phase.over, cfg.action_gap)
                leaving = anyio.current_time()
            stats.exit_took(anyio.current_time() - leaving)
            provider.cancel_scope.cancel()
        _check_final(report, label, checker, manager.state)

    return await _soak(report, session)


# ------------------------------------------------------------------ OpenAI transport

API_KEY = "sk-soak-" + "S3cr3t" * 6
"""The key the soak's local servers require (never to be seen in any output)."""


def run_openai(backend: str, cfg: SoakConfig) -> SoakReport:
    """The soak over the real OpenAI transport and local servers (real clock)."""
    return anyio.run(_openai_main, backend, cfg, backend=backend)


async def _openai_main(backend: str, cfg: SoakConfig) -> SoakReport:
    from charivo_fsm.testing import LocalRealtimeServer

    from .openai_chaos import TRIGGERS, CountingOpenAITransport, server_chaos

    report = SoakReport(
        name=f"OpenAI transport + local server ({backend}, real clock)",
        backend=backend,
        config=cfg,
        stats=RunStats(anyio.current_time),
        virtual=False,
    )
    messages = (*(f"please {t.keyword}" for t in TRIGGERS), "hello", "how are you?")

    async def session(slot: int, phase: Phase, stats: RunStats, logger: logging.Logger) -> None:
        rng = random.Random(f"{cfg.seed}:openai:{backend}:{slot}")
        label = f"o{slot}"
        server = LocalRealtimeServer(
            api_key=API_KEY,
            tool_triggers=TRIGGERS,
            audio=rng.random() < 0.3,
            delta_delay=rng.choice((0.0, 0.002, 0.01)),
        )
        async with server:
            transport = CountingOpenAITransport(
                stats,
                api_key=API_KEY,
                url=server.url,
                close_timeout=0.5,
                ping_interval=0.5,
                ping_timeout=0.5,
                max_message_size=64 * 1024,
            )

            def spy(event: TransportEvent) -> None:
                stats.counts["transport events delivered"] += 1
                if isinstance(event, ToolCall):
                    stats.tool_received(call_key(event.call_id))

            transport.on_event(spy)  # before the manager's callback: counts first
            checker = Checker(stats, label, rng=rng)
            manager = create_realtime_manager(
                transport,
                default_session_config=RealtimeSessionConfig(instructions="Soak."),
                tools=make_tools(rng, cfg.tool_timeout, stats),
                default_tool_timeout=cfg.tool_timeout,
                reconnect_delays=cfg.reconnect_delays,
                transport_timeout=cfg.transport_timeout,
                logger=logger,
            )
            checker.manager = manager
            manager.set_event_emitter(checker)
            program = Program(
                manager,
                rng,
                stats,
                label=label,
                transport_calls=lambda: transport.calls,
                stuck_bound=_stuck_bound(cfg),
                give_up_after=cfg.transport_timeout / 2,
                stop_bound=cfg.transport_timeout + 1.0,
                messages=messages,
            )
            async with transport, anyio.create_task_group() as chaos:
                async with manager:
                    await program.warm_up()
                    await phase.warmed()
                    chaos.start_soon(server_chaos, server, rng, stats, phase.over, cfg)
                    await program.run(phase.over, cfg.action_gap)
                    leaving = anyio.current_time()
                stats.exit_took(anyio.current_time() - leaving)
                chaos.cancel_scope.cancel()
            _check_final(report, label, checker, manager.state)

    return await _soak(report, session)
