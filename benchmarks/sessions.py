"""Workload f: many concurrent active sessions fed the workload-a mix in real time."""

from __future__ import annotations

import tracemalloc
from contextlib import AsyncExitStack
from time import perf_counter, process_time
from typing import Any

import anyio

from charivo_fsm import RealtimeManager, create_realtime_manager
from charivo_fsm.testing import FakeTransport

from .common import CYCLE, fresh_heap, quiet_logger
from .settings import SESSIONS

RATE = 50.0  # events per second and session
DURATION = 10.0  # seconds of wall time


class StampingEmitter:
    """Notes when it last received an event (``perf_counter`` seconds)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0.0

    def emit(self, name: str, payload: Any) -> None:
        self.last = perf_counter()


def _percentile(ordered: list[float], fraction: float) -> float:
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


async def _open_sessions(
    stack: AsyncExitStack, transports: list[FakeTransport]
) -> list[RealtimeManager]:
    managers = []
    for transport in transports:
        manager = await stack.enter_async_context(
            create_realtime_manager(transport, logger=quiet_logger())
        )
        await manager.start_session({"voice": "marin"})
        managers.append(manager)
    return managers


async def concurrent_sessions(
    sessions: int = SESSIONS, rate: float = RATE, duration: float = DURATION
) -> dict[str, float]:
    """``sessions`` entered managers, each fed ``rate`` events/s for ``duration`` s by a
    task of its own (standing in for a transport's reader task), with start times spread
    over the first period.  Latency: from the moment the transport invokes the callback
    until the emitter has received the last emit of that event.  Lag: how late the
    feeding task delivered the event against its schedule (event-loop saturation)."""
    transports = [FakeTransport() for _ in range(sessions)]
    per_session = int(rate * duration)
    period = 1.0 / rate
    latencies: list[float] = []
    lags: list[float] = []
    cycle = CYCLE
    async with AsyncExitStack() as stack:
        managers = await _open_sessions(stack, transports)
        callbacks = [transport.callbacks[0] for transport in transports]
        emitters = [StampingEmitter() for _ in managers]
        for manager, emitter in zip(managers, emitters, strict=True):
            manager.set_event_emitter(emitter)
        fresh_heap()
        cpu_begin = process_time()
        begin = perf_counter() + 0.05

        async def feed(index: int) -> None:
            callback = callbacks[index]
            emitter = emitters[index]
            due = begin + period * index / sessions
            record_latency = latencies.append
            record_lag = lags.append
            for count in range(per_session):
                now = perf_counter()
                if due > now:
                    await anyio.sleep(due - now)
                sent = perf_counter()
                callback(cycle[count % 20])
                record_latency(emitter.last - sent)
                record_lag(sent - due)
                due += period

        async with anyio.create_task_group() as tg:
            for index in range(sessions):
                tg.start_soon(feed, index)
        wall = perf_counter() - begin
        cpu = process_time() - cpu_begin
        for manager in managers:
            manager.set_event_emitter(None)
    engine = sum(latencies)
    latencies.sort()
    lags.sort()
    return {
        "p50_us": _percentile(latencies, 0.50) * 1e6,
        "p99_us": _percentile(latencies, 0.99) * 1e6,
        "max_us": latencies[-1] * 1e6,
        "lag_p50_us": _percentile(lags, 0.50) * 1e6,
        "lag_p99_us": _percentile(lags, 0.99) * 1e6,
        "events": float(len(latencies)),
        "wall_s": wall,
        # how busy the process was (feeding tasks, timers, engine), and the part of it
        # spent between callback and emitter
        "cpu_busy": cpu / wall,
        "engine_busy": engine / wall,
    }


async def session_memory(sessions: int = SESSIONS) -> dict[str, float]:
    """Bytes per entered session (tracemalloc): the manager entered with ``async with``,
    its session started, an emitter set -- and, separately, its fake transport."""
    fresh_heap()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        transports = [FakeTransport() for _ in range(sessions)]
        fresh_heap()
        after_transports = tracemalloc.get_traced_memory()[0]
        async with AsyncExitStack() as stack:
            managers = await _open_sessions(stack, transports)
            emitters = [StampingEmitter() for _ in managers]
            for manager, emitter in zip(managers, emitters, strict=True):
                manager.set_event_emitter(emitter)
            # one full cycle of the mix per session, so the response state is in use
            for transport in transports:
                callback = transport.callbacks[0]
                for event in CYCLE:
                    callback(event)
            fresh_heap()
            entered = tracemalloc.get_traced_memory()[0]
            for manager in managers:
                manager.set_event_emitter(None)
    finally:
        tracemalloc.stop()
    return {
        "bytes_session": (entered - after_transports) / sessions,
        "bytes_transport": (after_transports - base) / sessions,
    }
